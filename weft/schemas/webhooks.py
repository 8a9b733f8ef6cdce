"""Webhooks (documents 000 and 001): subscriptions, their deliveries and the event types."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from weft.schemas.common import Out, UtcDatetime

DeliveryStatus = Literal["pending", "delivered", "failed"]


def _check_url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; use the signing secret to authenticate deliveries")
    return value


EVENT_TYPES: dict[str, str] = {
    # document 000
    "workflow.created": "A new workflow has been created",
    "workflow.started": "A workflow's run has started running",
    "workflow.completed": "A workflow's run has completed successfully",
    "workflow.failed": "A workflow's run has failed (or crashed)",
    "workflow.cancelled": "A workflow's run has been cancelled",
    "model.created": "A new model has been created",
    "model.deployed": "A model has been deployed",
    "model.undeployed": "A model has been undeployed",
    "drift.detected": "Drift has been detected in a model",
    "optimization.recommended": "A new optimization recommendation has been generated",
    # document 001
    "deployment.created": "A new deployment (endpoint) has been initiated",
    "deployment.building": "A deployment is being built (its replicas are starting)",
    "deployment.ready": "A deployment is active and ready",
    "deployment.updated": "A deployment's desired state changed (a new revision, traffic, bounds, name, limits)",
    "deployment.rolled_back": "A deployment's traffic went back to an earlier version",
    "deployment.failed": "A deployment has failed",
    "deployment.stopped": "A deployment has been stopped",
    "deployment.deleted": "A deployment has been removed",
    "prediction.error": "A prediction request has failed",
}
"""The event types a webhook can subscribe to, with what each means."""

TEST_EVENT = "webhook.test"  # sent by POST /webhooks/{id}/test to that webhook only; not subscribable


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
