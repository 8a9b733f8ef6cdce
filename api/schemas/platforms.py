"""Compute platforms and their resources (document 003)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.compute.catalog import Pricing
from weft.compute.platforms import PlatformView
from weft.compute.resources import Availability, Resource


class PlatformList(BaseModel):
    platforms: list[PlatformView]


class PlatformConnect(BaseModel):
    credentials: dict[str, Any] = Field(description="{\"api_key\": \"...\"}: kept in a Prefect Secret block")


class PlatformConnected(BaseModel):
    success: bool
    platform: str
    status: str
    pool: str = Field(description="the Prefect work pool of the platform's workers")


class PlatformDisconnected(BaseModel):
    success: bool
    message: str


class ResourceList(BaseModel):
    resources: list[Resource]


class ResourcePricing(BaseModel):
    resource_id: str
    provider: str
    pricing: Pricing
    availability: Availability
