"""The events outbox: `emit` writes an `Event` and its pending deliveries in the caller's transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import insert
from sqlmodel import Session, col, select

from weft.clock import as_utc, utcnow
from weft.schemas.webhooks import EVENT_TYPES, TEST_EVENT
from weft.statuses import DeliveryStatus
from weft.tables import Event, Webhook, WebhookDelivery, new_id

log = logging.getLogger(__name__)

def iso(value: datetime) -> str:
    """`2025-08-01T14:30:00Z`, as the documents write times."""
    return as_utc(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _insert_ignoring_conflict(session: Session, table: Any, values: dict[str, Any], unique: list[str]) -> bool:
    """INSERT that does nothing when `unique` already exists; True when a row was written. Runs in the
    caller's transaction without aborting it. Concurrent inserts of one key (two API processes) write
    one row: PostgreSQL makes the later ones wait for the first's commit, then skip."""
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        # RETURNING, not rowcount: SQLAlchemy does not report an INSERT's rowcount on psycopg (it is -1)
        key = table.__table__.primary_key.columns.values()[0]
        stmt = dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=unique).returning(key)
        return session.execute(stmt).first() is not None
    from sqlalchemy.exc import IntegrityError

    try:
        with session.begin_nested():
            session.execute(insert(table).values(**values))
        return True
    except IntegrityError:
        return False


def subscribers(session: Session, user_id: str | None, event_type: str) -> list[Webhook]:
    """The user's active webhooks subscribed to `event_type`."""
    if user_id is None:
        return []
    hooks = session.exec(select(Webhook).where(Webhook.user_id == user_id, col(Webhook.active).is_(True))).all()
    return [h for h in hooks if event_type in (h.events or [])]


def emit(session: Session, type: str, data: dict[str, Any], *, key: str, user_id: str | None,
         webhooks: Iterable[Webhook] | None = None) -> Event | None:
    """Add an event to the outbox and a pending delivery for each active webhook of `user_id`
    subscribed to `type` (or for `webhooks`, when given). Nothing happens, and None is returned, when
    an event with `key` exists already. Does not commit: the caller's commit publishes it."""
    if type not in EVENT_TYPES and type != TEST_EVENT:
        raise ValueError(f"unknown webhook event type {type!r}; known: {', '.join(EVENT_TYPES)}")
    now = utcnow()
    event = Event(id=new_id(), key=key, user_id=user_id, type=type, data=to_jsonable_python(data or {}),
                  created_at=now)
    if not _insert_ignoring_conflict(session, Event, event.model_dump(), ["key"]):
        return None
    targets = list(webhooks) if webhooks is not None else subscribers(session, user_id, type)
    for hook in targets:
        _insert_ignoring_conflict(session, WebhookDelivery, WebhookDelivery(
            id=new_id(), webhook_id=hook.id, event_id=event.id, event_type=type, status=DeliveryStatus.PENDING,
            attempts=[], next_attempt_at=now, created_at=now, updated_at=now).model_dump(), ["webhook_id", "event_id"])
    log.debug("event %s %s (%s) for %d webhook(s)", type, event.id, key, len(targets))
    return event


def model_created(session: Session, model_id: str, name: str, kind: str, workflow_id: str | None,
                  owner_id: str) -> None:
    """The `model.created` event (once per model, in the registering transaction)."""
    emit(session, "model.created", {"model_id": model_id, "name": name, "type": kind, "workflow_id": workflow_id},
         key=f"model:{model_id}:created", user_id=owner_id)


def payload(event: Event) -> dict[str, Any]:
    """The JSON body of a delivery (document 000's shape, plus document 001's `event`/`timestamp`)."""
    created = iso(event.created_at)
    return {"id": event.id, "type": event.type, "created_at": created, "data": event.data,
            "event": event.type, "timestamp": created}
