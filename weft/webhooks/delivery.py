"""Signed HTTP delivery of the outbox: claim due deliveries, POST them, record each attempt, back off."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import col, select

from weft.clock import as_utc, utcnow
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


def _claim(limit: int, settings: WebhookSettings) -> list[tuple[str, str]]:
    """Reserve up to `limit` due pending deliveries (their `next_attempt_at` moves a lease ahead) and
    return their (id, webhook id), oldest first; a conditional update makes concurrent workers take
    disjoint sets."""
    from weft.db import session_scope

    now = utcnow()
    lease_until = now + timedelta(seconds=settings.lease_seconds)
    claimed: list[tuple[str, str]] = []
    with session_scope() as session:
        due = session.exec(
            select(WebhookDelivery.id, WebhookDelivery.webhook_id, WebhookDelivery.next_attempt_at)
            .where(WebhookDelivery.status == DeliveryStatus.PENDING, col(WebhookDelivery.next_attempt_at).is_not(None),
                   col(WebhookDelivery.next_attempt_at) <= now)
            .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.created_at))
            .limit(limit)).all()
        for delivery_id, webhook_id, at in due:
            result = session.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == DeliveryStatus.PENDING,
                       col(WebhookDelivery.next_attempt_at) == at)
                .values(next_attempt_at=lease_until))
            if result.rowcount == 1:
                claimed.append((delivery_id, webhook_id))
    return claimed


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


def _deliver_one(delivery_id: str, client: httpx.Client, settings: WebhookSettings,
                 secret_cache: dict[str, str]) -> str:
    """Send one claimed delivery and record the attempt; returns its new status."""
    from weft.db import session_scope

    with session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return delivery.status if delivery else "gone"
        hook = session.get(Webhook, delivery.webhook_id)
        event = session.get(Event, delivery.event_id)
    attempt_number = len(delivery.attempts or []) + 1
    if hook is None or event is None or not hook.active:
        why = "webhook deleted" if hook is None else "event missing" if event is None else "webhook inactive"
        attempt = {"at": iso_precise(utcnow()), "status_code": None, "error": why, "duration_ms": 0}
        return _record(delivery_id, attempt, ok=False, final=True, settings=settings)
    body = json.dumps(payload(event), separators=(",", ":"), default=str).encode()
    try:
        if hook.secret_block not in secret_cache:
            secret_cache[hook.secret_block] = read_secret(hook.secret_block)
        secret = secret_cache[hook.secret_block]
    except Exception as exc:  # Prefect down or block gone: try again later
        log.warning("webhook %s: could not load its signing secret %s: %s", hook.id, hook.secret_block, exc)
        attempt = {"at": iso_precise(utcnow()), "status_code": None, "error": "signing secret unavailable",
                   "duration_ms": 0}
        return _record(delivery_id, attempt, ok=False, final=False, settings=settings)
    headers = {"Content-Type": "application/json", "User-Agent": "weft-webhooks/1", EVENT_HEADER: event.type,
               DELIVERY_HEADER: delivery_id, ATTEMPT_HEADER: str(attempt_number),
               SIGNATURE_HEADER: sign(secret, body)}
    attempt = _post(client, hook.url, body, headers)
    ok = attempt["error"] is None
    return _record(delivery_id, attempt, ok=ok, final=False, settings=settings)


def _record(delivery_id: str, attempt: dict[str, Any], *, ok: bool, final: bool, settings: WebhookSettings) -> str:
    from weft.db import session_scope

    with session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return "gone"
        attempts = [*(delivery.attempts or []), attempt]
        now = utcnow()
        if ok:
            status, next_at = DeliveryStatus.DELIVERED, None
        elif final or len(attempts) >= settings.max_attempts:
            status, next_at = DeliveryStatus.FAILED, None
        else:
            status, next_at = DeliveryStatus.PENDING, now + timedelta(seconds=backoff(len(attempts), settings))
        delivery.attempts, delivery.status, delivery.next_attempt_at, delivery.updated_at = \
            attempts, status, next_at, now
        session.add(delivery)
    if status == DeliveryStatus.FAILED:
        log.warning("webhook delivery %s failed after %d attempt(s): %s", delivery_id, len(attempts),
                    attempt.get("error"))
    return status


def _safe_deliver(delivery_id: str, client: httpx.Client, settings: WebhookSettings,
                  secret_cache: dict[str, str]) -> None:
    try:
        _deliver_one(delivery_id, client, settings, secret_cache)
    except Exception:  # the lease expires and a later round tries again
        log.exception("webhook delivery %s could not be processed", delivery_id)


def deliver_due(limit: int = 50, *, settings: WebhookSettings | None = None) -> int:
    """Send up to `limit` due pending deliveries and return how many were attempted. One webhook's
    deliveries go out one after another, oldest first; different webhooks in parallel
    (`WEFT_WEBHOOK_CONCURRENCY`). Synchronous: call it from a thread."""
    s = settings or webhook_settings()
    claimed = _claim(limit, s)
    if not claimed:
        return 0
    by_hook: dict[str, list[str]] = {}
    for delivery_id, webhook_id in claimed:
        by_hook.setdefault(webhook_id, []).append(delivery_id)
    secret_cache: dict[str, str] = {}

    def send(ids: list[str]) -> None:
        for delivery_id in ids:
            _safe_deliver(delivery_id, client, s, secret_cache)

    with httpx.Client(timeout=s.timeout_seconds, follow_redirects=False) as client:
        if len(by_hook) == 1 or s.concurrency == 1:
            for ids in by_hook.values():
                send(ids)
        else:
            with ThreadPoolExecutor(max_workers=min(s.concurrency, len(by_hook)),
                                    thread_name_prefix="weft-webhook") as pool:
                list(pool.map(send, by_hook.values()))
    return len(claimed)
