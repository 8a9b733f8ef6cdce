"""Webhooks (documents 000 and 001): subscribe a URL to events; deliveries are signed and retried.

The signing secret lives in the Prefect Secret block `weft-webhook-<id>`, never in weft's tables; it is
shown once, in the creation response, and only when weft generated it. See `weft.webhooks` for the
payload, the headers and how a receiver verifies `X-Weft-Signature`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, status
from sqlmodel import col, delete, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Listing, Paging, paginate
from weft import webhooks
from weft.clock import utcnow
from weft.schemas.common import Page
from weft.schemas.webhooks import (
    DeliveryOut,
    DeliveryStatus,
    EventTypeOut,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookUpdate,
)
from weft.secret_blocks import remove_secret, store_secret
from weft.tables import Webhook, WebhookDelivery, new_id

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def delivery_out(row: WebhookDelivery) -> DeliveryOut:
    out = DeliveryOut.model_validate(row)
    out.attempt_count = len(out.attempts)
    return out


def checked_events(events: list[str]) -> list[str]:
    """The events, de-duplicated in order; a 422 naming every unknown one."""
    unknown = [e for e in events if e not in webhooks.EVENT_TYPES]
    if unknown:
        raise ApiError(422, "VALIDATION_ERROR",
                       f"Invalid parameter: events: unknown event type(s): {', '.join(map(repr, unknown))}",
                       {"field": "events", "unknown": unknown, "allowed": list(webhooks.EVENT_TYPES)})
    return list(dict.fromkeys(events))


# --- endpoints --------------------------------------------------------------------------------------

@router.get("/event-types", response_model=list[EventTypeOut])
def list_event_types(user: CurrentUser) -> list[dict[str, str]]:
    """The event types a webhook can subscribe to."""
    return [{"type": t, "description": d} for t, d in webhooks.EVENT_TYPES.items()]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated, response_model_exclude_none=True)
def create_webhook(body: WebhookIn, user: CurrentUser, session: SessionDep) -> WebhookCreated:
    """Subscribe `url` to `events`. The secret goes to the Prefect Secret block `weft-webhook-<id>`; the
    response includes it only when weft generated it."""
    events = checked_events(body.events)
    webhook_id = new_id()
    secret = body.secret or webhooks.generate_secret()
    now = utcnow()
    row = Webhook(id=webhook_id, user_id=user.id, url=body.url, events=events,
                  secret_block=webhooks.secret_block_name(webhook_id), active=True, created_at=now, updated_at=now)
    store_secret(session, row, row.secret_block, secret)
    out = WebhookCreated.model_validate(row)
    out.secret = None if body.secret else secret
    return out


@router.get("", response_model=Page[WebhookOut])
def list_webhooks(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing) -> dict[str, Any]:
    """The caller's webhooks (never their secrets)."""
    stmt = select(Webhook).where(Webhook.user_id == user.id).order_by(col(Webhook.created_at), col(Webhook.id))
    return paginate(session, stmt, page, WebhookOut.model_validate, listing, WebhookOut)


@router.get("/{webhook_id}", response_model=WebhookOut)
def get_webhook(webhook_id: str, user: CurrentUser, session: SessionDep) -> WebhookOut:
    return WebhookOut.model_validate(get_owned(session, Webhook, webhook_id, user.id, "webhook"))


@router.patch("/{webhook_id}", response_model=WebhookOut)
def update_webhook(webhook_id: str, body: WebhookUpdate, user: CurrentUser, session: SessionDep) -> WebhookOut:
    """Change the URL, the events or `active` (an inactive webhook gets no new deliveries and its
    pending ones fail)."""
    row = get_owned(session, Webhook, webhook_id, user.id, "webhook")
    if body.url is not None:
        row.url = body.url
    if body.events is not None:
        row.events = checked_events(body.events)
    if body.active is not None:
        row.active = body.active
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    return WebhookOut.model_validate(row)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_webhook(webhook_id: str, user: CurrentUser, session: SessionDep) -> None:
    """Delete the webhook, its delivery history and its Secret block."""
    row = get_owned(session, Webhook, webhook_id, user.id, "webhook")
    remove_secret(row.secret_block)
    session.exec(delete(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == row.id))
    session.delete(row)
    session.commit()


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut])
def list_deliveries(webhook_id: str, user: CurrentUser, session: SessionDep, page: Paging, listing: Listing,
                    status_filter: DeliveryStatus | None = Query(None, alias="status"),
                    event_type: str | None = Query(None)) -> dict[str, Any]:
    """The webhook's deliveries, newest first, each with every attempt (time, status code, error,
    duration)."""
    get_owned(session, Webhook, webhook_id, user.id, "webhook")
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if status_filter:
        stmt = stmt.where(WebhookDelivery.status == status_filter)
    if event_type:
        stmt = stmt.where(WebhookDelivery.event_type == event_type)
    stmt = stmt.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id))
    return paginate(session, stmt, page, delivery_out, listing, DeliveryOut)


@router.post("/{webhook_id}/test", status_code=status.HTTP_202_ACCEPTED, response_model=DeliveryOut)
def test_webhook(webhook_id: str, user: CurrentUser, session: SessionDep) -> DeliveryOut:
    """Queue a `webhook.test` event for this webhook only; it is sent within a poll period
    (`WEFT_WEBHOOK_POLL_SECONDS`). Follow it with GET /webhooks/{id}/deliveries."""
    row = get_owned(session, Webhook, webhook_id, user.id, "webhook")
    event_id = new_id()
    event = webhooks.emit(session, webhooks.TEST_EVENT,
                          {"webhook_id": row.id, "message": "a test event from weft"},
                          key=f"test:{row.id}:{event_id}", user_id=user.id, webhooks=[row])
    session.commit()
    delivery = session.exec(select(WebhookDelivery).where(WebhookDelivery.webhook_id == row.id,
                                                          WebhookDelivery.event_id == event.id)).one()
    return delivery_out(delivery)
