"""Webhooks (documents 000 and 001): subscriptions, their deliveries and the event types."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from api.schemas.common import Out, UtcDatetime
from weft.webhooks import EVENT_TYPES

DeliveryStatus = Literal["pending", "delivered", "failed"]


def _check_url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; use the signing secret to authenticate deliveries")
    return value


class WebhookIn(BaseModel):
    url: str = Field(max_length=2048, description="http(s) URL that receives POSTed events")
    events: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES),
                              description="event types to receive; see GET /webhooks/event-types")
    secret: str | None = Field(default=None, min_length=8, max_length=256,
                               description="signing secret; weft generates one (returned once) when absent")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)


class WebhookUpdate(BaseModel):
    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))
    active: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v)


class WebhookOut(Out):
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime


class WebhookCreated(WebhookOut):
    secret: str | None = Field(default=None, description="the generated signing secret; shown only here")


class AttemptOut(BaseModel):
    at: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None


class DeliveryOut(Out):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: list[AttemptOut]
    attempt_count: int = 0
    next_attempt_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class EventTypeOut(BaseModel):
    type: str
    description: str
