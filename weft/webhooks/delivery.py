"""Signed HTTP delivery of the outbox: claim due deliveries, POST them, record each attempt, back off."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import Session, col, select

from weft.clock import as_utc, utcnow
from weft.db import database_unavailable, session_scope
from weft.secret_blocks import read_secret
from weft.settings import WebhookSettings, webhook_settings
from weft.statuses import DeliveryStatus
from weft.tables import Event, Webhook, WebhookDelivery
from weft.webhooks.outbox import payload
from weft.webhooks.signing import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Weft-Event"
DELIVERY_HEADER = "X-Weft-Delivery"
ATTEMPT_HEADER = "X-Weft-Attempt"


def backoff(failed_attempts: int, settings: WebhookSettings | None = None) -> float:
    """Seconds to wait after the `failed_attempts`-th failed attempt: base × 2^(n-1), capped."""
    s = settings or webhook_settings()
    return min(s.backoff_seconds * (2 ** max(failed_attempts - 1, 0)), s.max_backoff_seconds)


def iso_precise(value: datetime) -> str:
    """ISO 8601 with microseconds and a `Z`: the time of an attempt."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


def _claim(limit: int, settings: WebhookSettings) -> list[tuple[str, str, datetime]]:
    """Lease up to `limit` due pending deliveries and return their (id, webhook id, lease), oldest first.

    A lease is `next_attempt_at` moved `lease_seconds` ahead; its exact value is the holder's token. The
    update is conditional on the row being as read (pending, due at that time), so of concurrent
    claimers one wins each row (rowcount 1) and the others skip it; on PostgreSQL the rows are also
    read `FOR UPDATE SKIP LOCKED`, so claimers take disjoint sets without waiting on each other. A
    delivery whose holder died is due again once its lease has passed."""
    now = utcnow()
    lease = now + timedelta(seconds=settings.lease_seconds)
    claimed: list[tuple[str, str, datetime]] = []
    with session_scope() as session:
        stmt = (select(WebhookDelivery.id, WebhookDelivery.webhook_id, WebhookDelivery.next_attempt_at)
                .where(WebhookDelivery.status == DeliveryStatus.PENDING,
                       col(WebhookDelivery.next_attempt_at).is_not(None), col(WebhookDelivery.next_attempt_at) <= now)
                .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.created_at))
                .limit(limit))
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        for delivery_id, webhook_id, at in session.exec(stmt).all():
            if _move_lease(session, delivery_id, at, next_attempt_at=lease):
                claimed.append((delivery_id, webhook_id, lease))
    return claimed


def _move_lease(session: Session, delivery_id: str, held: datetime, **values: Any) -> bool:
    """Update a pending delivery whose `next_attempt_at` is still `held`; False when another worker
    has taken it (or it is no longer pending)."""
    result = session.execute(
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == DeliveryStatus.PENDING,
               col(WebhookDelivery.next_attempt_at) == held)
        .values(**values))
    return result.rowcount == 1


def _post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """One attempt: `{at, status_code, error, duration_ms}`."""
    at = utcnow()
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    try:
        response = client.post(url, content=body, headers=headers)
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}: {response.text[:200]}".strip()
    except httpx.TimeoutException:
        error = "timed out"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    return {"at": iso_precise(at), "status_code": status_code, "error": error,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1)}


@dataclass(frozen=True)
class Lease:
    """A delivery this worker holds: its lease token and the attempts recorded before this one."""

    delivery_id: str
    until: datetime
    attempts: list[dict[str, Any]]


def _deliver_one(delivery_id: str, lease: datetime, client: httpx.Client, settings: WebhookSettings,
                 secret_cache: dict[str, str]) -> str:
    """Send one leased delivery and record the attempt; returns its new status ("lost" when another
    worker took it over after the lease ran out while it waited its turn here)."""
    # renew the lease for this attempt: a batch's later deliveries may wait a while for the earlier ones
    renewed = utcnow() + timedelta(seconds=settings.lease_seconds)
    with session_scope() as session:
        if not _move_lease(session, delivery_id, lease, next_attempt_at=renewed):
            log.info("webhook delivery %s: lease lost before sending, another worker has it", delivery_id)
            return "lost"
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return "gone"
        hook = session.get(Webhook, delivery.webhook_id)
        event = session.get(Event, delivery.event_id)
    held = Lease(delivery_id, renewed, list(delivery.attempts or []))
    if hook is None or event is None or not hook.active:
        why = "webhook deleted" if hook is None else "event missing" if event is None else "webhook inactive"
        attempt = {"at": iso_precise(utcnow()), "status_code": None, "error": why, "duration_ms": 0}
        return _record(held, attempt, ok=False, final=True, settings=settings)
    body = json.dumps(payload(event), separators=(",", ":"), default=str).encode()
    try:
        if hook.secret_block not in secret_cache:
            secret_cache[hook.secret_block] = read_secret(hook.secret_block)
        secret = secret_cache[hook.secret_block]
    except Exception as exc:  # Prefect down or block gone: try again later
        log.warning("webhook %s: could not load its signing secret %s: %s", hook.id, hook.secret_block, exc)
        attempt = {"at": iso_precise(utcnow()), "status_code": None, "error": "signing secret unavailable",
                   "duration_ms": 0}
        return _record(held, attempt, ok=False, final=False, settings=settings)
    headers = {"Content-Type": "application/json", "User-Agent": "weft-webhooks/1", EVENT_HEADER: event.type,
               DELIVERY_HEADER: delivery_id, ATTEMPT_HEADER: str(len(held.attempts) + 1),
               SIGNATURE_HEADER: sign(secret, body)}
    attempt = _post(client, hook.url, body, headers)
    ok = attempt["error"] is None
    return _record(held, attempt, ok=ok, final=False, settings=settings)


def _record(held: Lease, attempt: dict[str, Any], *, ok: bool, final: bool, settings: WebhookSettings) -> str:
    """Store the attempt and the delivery's next state, only while this worker still holds the lease."""
    attempts = [*held.attempts, attempt]
    now = utcnow()
    if ok:
        status, next_at = DeliveryStatus.DELIVERED, None
    elif final or len(attempts) >= settings.max_attempts:
        status, next_at = DeliveryStatus.FAILED, None
    else:
        status, next_at = DeliveryStatus.PENDING, now + timedelta(seconds=backoff(len(attempts), settings))
    with session_scope() as session:
        stored = _move_lease(session, held.delivery_id, held.until, attempts=attempts, status=status,
                             next_attempt_at=next_at, updated_at=now)
    if not stored:  # only when an attempt outlived its lease (lease_seconds should exceed timeout_seconds)
        log.warning("webhook delivery %s: attempt %d not recorded, its lease ran out", held.delivery_id,
                    len(attempts))
        return "lost"
    if status == DeliveryStatus.FAILED:
        log.warning("webhook delivery %s failed after %d attempt(s): %s", held.delivery_id, len(attempts),
                    attempt.get("error"))
    return status


def _safe_deliver(delivery_id: str, lease: datetime, client: httpx.Client, settings: WebhookSettings,
                  secret_cache: dict[str, str]) -> None:
    try:
        _deliver_one(delivery_id, lease, client, settings, secret_cache)
    except Exception as exc:  # the lease expires and a later round tries again
        if database_unavailable(exc):
            log.warning("webhook delivery %s postponed, the database is unavailable: %s", delivery_id,
                        type(exc).__name__)
        else:
            log.exception("webhook delivery %s could not be processed", delivery_id)


def deliver_due(limit: int = 50, *, settings: WebhookSettings | None = None) -> int:
    """Send up to `limit` due pending deliveries and return how many were attempted. One webhook's
    deliveries go out one after another, oldest first; different webhooks in parallel
    (`WEFT_WEBHOOK_CONCURRENCY`). Synchronous: call it from a thread."""
    s = settings or webhook_settings()
    claimed = _claim(limit, s)
    if not claimed:
        return 0
    by_hook: dict[str, list[tuple[str, datetime]]] = {}
    for delivery_id, webhook_id, lease in claimed:
        by_hook.setdefault(webhook_id, []).append((delivery_id, lease))
    secret_cache: dict[str, str] = {}

    def send(leases: list[tuple[str, datetime]]) -> None:
        for delivery_id, lease in leases:
            _safe_deliver(delivery_id, lease, client, s, secret_cache)

    with httpx.Client(timeout=s.timeout_seconds, follow_redirects=False) as client:
        if len(by_hook) == 1 or s.concurrency == 1:
            for ids in by_hook.values():
                send(ids)
        else:
            with ThreadPoolExecutor(max_workers=min(s.concurrency, len(by_hook)),
                                    thread_name_prefix="weft-webhook") as pool:
                list(pool.map(send, by_hook.values()))
    return len(claimed)
