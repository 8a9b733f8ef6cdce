"""Compute platforms and their resources (document 003)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from weft.compute.catalog import Pricing, ResourceDef


class PlatformView(BaseModel):
    name: str
    display_name: str
    status: str
    features: list[str]
    last_verified: datetime | None = None
    reason: str | None = None
    pools: list[str] = []


class Resource(ResourceDef):
    provider: str
    pool: str
    available: bool = False


class Availability(BaseModel):
    available: bool
    queue_length: int
    estimated_wait_minutes: float | None


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
