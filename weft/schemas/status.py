"""Health (`GET /`) and component status (`GET /api/v1/status`, document 001)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

State = Literal["operational", "degraded"]


class Health(BaseModel):
    status: str
    message: str
    version: str
    timestamp: datetime


class ComponentIssue(BaseModel):
    """A component that is not operational, and why."""

    component: str
    message: str


class Status(BaseModel):
    api: State
    database: State
    storage: State
    prefect: State
    issues: list[ComponentIssue]
