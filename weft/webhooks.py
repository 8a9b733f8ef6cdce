"""Webhooks: an outbox of events, signed HTTP deliveries with retries, and workflow events from Prefect.

How it fits together
--------------------
- `emit(session, type, data, key=..., user_id=...)` writes one `Event` row (the outbox) and one pending
  `WebhookDelivery` per active webhook of that user subscribed to `type`, in the caller's transaction: the
  event exists exactly when the change it describes was committed. `key` makes an event unique; emitting
  the same key again (a replay, a restart, two API processes) does nothing and returns None.
- `deliver_due()` POSTs due pending deliveries, records every attempt (`at, status_code, error,
  duration_ms`) and retries failures with exponential backoff: `WEFT_WEBHOOK_BACKOFF_SECONDS` × 2^(n-1)
  after the n-th failed attempt (capped by `WEFT_WEBHOOK_MAX_BACKOFF_SECONDS`), up to
  `WEFT_WEBHOOK_MAX_ATTEMPTS` attempts, then `failed`. A delivery is claimed (leased) before it is sent, so
  two workers never send the same attempt.
- Workflow events come from Prefect: `reconcile(since)` compares weft's workflows with their flow runs and
  emits `workflow.created/started/completed/failed/cancelled` with the keys
  `workflow:{id}:created` and `workflow:{id}:{run_count}:{STATUS}`, so each transition is emitted once,
  across restarts. `WebhookService` runs that poll (plus delivery) every `WEFT_WEBHOOK_POLL_SECONDS`, and
  a subscription to Prefect's `prefect.flow-run.*` events that runs the same reconcile for one run as soon
  as its state changes; when the subscription is down, the poll still covers everything.

The request a receiver gets
---------------------------
``POST <url>`` with ``Content-Type: application/json`` and the body::

    {"id": "<event id>", "type": "workflow.completed", "created_at": "2025-08-01T14:30:00Z",
     "data": {...}, "event": "workflow.completed", "timestamp": "2025-08-01T14:30:00Z"}

(`event`/`timestamp` repeat `type`/`created_at` in the shape of document 001). Retries of one delivery
send the same body with the same event `id`: use it to drop duplicates. Headers:

- ``X-Weft-Event``: the event type
- ``X-Weft-Delivery``: the delivery id (one per webhook and event; the same on every retry)
- ``X-Weft-Attempt``: 1, 2, ...
- ``X-Weft-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``

Answer with any 2xx within `WEFT_WEBHOOK_TIMEOUT_SECONDS` (default 10 s); anything else is retried.

Verifying a delivery
--------------------
The signature is ``HMAC-SHA256(secret, f"{t}.{raw_body}")`` in hex, where ``secret`` is the webhook's
signing secret (the one you sent when creating the webhook, or the `secret` weft returned once in the
creation response) and ``raw_body`` is the request body exactly as received, before any JSON parsing.
To verify:

1. split the header on ``,`` into ``key=value`` pairs; take ``t`` and every ``v1`` (more than one `v1`
   may appear);
2. reject the request when ``|now - t|`` is more than your tolerance (300 s is the default here): a
   replayed old request fails this check;
3. compute ``hex(HMAC-SHA256(secret, t + "." + raw_body))`` and compare it with each ``v1`` in constant
   time (`hmac.compare_digest`); accept if one matches.

In Python, with weft installed: ``weft.webhooks.verify(secret, raw_body, headers["X-Weft-Signature"])``.
Without it::

    import hashlib, hmac, time

    def verify(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
        parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
        t = next((v for k, v in parts if k.strip() == "t"), None)
        if t is None or not t.isdigit() or abs(time.time() - int(t)) > tolerance:
            return False
        expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(expected, v) for k, v in parts if k.strip() == "v1")
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import anyio
import httpx
from pydantic import Field
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import insert, or_, update
from sqlmodel import Session, col, select

from weft.tables import Event, Webhook, WebhookDelivery, Workflow, new_id, utcnow

log = logging.getLogger(__name__)

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
    "deployment.failed": "A deployment has failed",
    "deployment.stopped": "A deployment has been stopped",
    "deployment.deleted": "A deployment has been removed",
    "prediction.error": "A prediction request has failed",
}
"""The event types a webhook can subscribe to, with what each means."""

TEST_EVENT = "webhook.test"  # sent by POST /webhooks/{id}/test to that webhook only; not subscribable

WORKFLOW_EVENTS = {"RUNNING": "workflow.started", "COMPLETED": "workflow.completed", "FAILED": "workflow.failed",
                   "CANCELLED": "workflow.cancelled"}
SIGNATURE_HEADER = "X-Weft-Signature"
EVENT_HEADER = "X-Weft-Event"
DELIVERY_HEADER = "X-Weft-Delivery"
ATTEMPT_HEADER = "X-Weft-Attempt"


class WebhookSettings(BaseSettings):
    """Knobs of the delivery worker, from `WEFT_WEBHOOK_*` (read at each use, so tests can change them)."""

    model_config = SettingsConfigDict(env_prefix="WEFT_WEBHOOK_", extra="ignore")

    backoff_seconds: float = Field(default=2.0, ge=0, description="delay after the 1st failed attempt; doubles")
    max_backoff_seconds: float = Field(default=3600.0, ge=0, description="cap of one retry delay")
    max_attempts: int = Field(default=10, ge=1, description="attempts before a delivery is marked failed")
    timeout_seconds: float = Field(default=10.0, gt=0, description="HTTP timeout of one attempt")
    poll_seconds: float = Field(default=2.0, gt=0, description="period of the reconcile + deliver loop")
    lookback_seconds: float = Field(default=3600.0, ge=0,
                                    description="finished workflows changed this long before a (re)start "
                                                "are still checked for missed events")
    subscribe: bool = Field(default=True, description="also listen to Prefect's flow-run events")
    concurrency: int = Field(default=4, ge=1, description="deliveries sent in parallel")
    lease_seconds: float = Field(default=120.0, gt=0, description="how long a claimed delivery is reserved")


def webhook_settings() -> WebhookSettings:
    return WebhookSettings()


def secret_block_name(webhook_id: str) -> str:
    """The Prefect Secret block holding a webhook's signing secret."""
    return f"weft-webhook-{webhook_id}"


def generate_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def iso(value: datetime) -> str:
    """`2025-08-01T14:30:00Z`, as the documents write times."""
    return _utc(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- signing ----------------------------------------------------------------------------------------

def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def signature(secret: str, body: bytes | str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of `f"{timestamp}.{body}"` with `secret`."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + _as_bytes(body), hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes | str, timestamp: int | None = None) -> str:
    """The `X-Weft-Signature` header value: `t=<unix seconds>,v1=<hex>`."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={signature(secret, body, t)}"


def verify(secret: str, body: bytes | str, header: str | None, tolerance: float = 300,
           now: float | None = None) -> bool:
    """Whether `header` (an `X-Weft-Signature` value) signs `body` (the raw request body) with `secret`
    and its timestamp is within `tolerance` seconds of `now`."""
    if not header or not secret:
        return False
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v.strip() for k, v in parts if k.strip() == "t"]
    candidates = [v.strip() for k, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not candidates:
        return False
    t = int(stamps[0])
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = signature(secret, body, t)
    return any(hmac.compare_digest(expected, c) for c in candidates)


# --- the outbox -------------------------------------------------------------------------------------

def _insert_ignoring_conflict(session: Session, table: Any, values: dict[str, Any], unique: list[str]) -> bool:
    """INSERT that does nothing when `unique` already exists; True when a row was written. Runs in the
    caller's transaction without aborting it."""
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=unique)
        return session.execute(stmt).rowcount == 1
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
            id=new_id(), webhook_id=hook.id, event_id=event.id, event_type=type, status="pending", attempts=[],
            next_attempt_at=now, created_at=now, updated_at=now).model_dump(), ["webhook_id", "event_id"])
    log.debug("event %s %s (%s) for %d webhook(s)", type, event.id, key, len(targets))
    return event


def emit_now(type: str, data: dict[str, Any], *, key: str, user_id: str | None) -> Event | None:
    """`emit` in its own committed transaction (for code that has no session open: flows, tasks)."""
    from weft.db import session_scope

    with session_scope() as session:
        return emit(session, type, data, key=key, user_id=user_id)


def payload(event: Event) -> dict[str, Any]:
    """The JSON body of a delivery (document 000's shape, plus document 001's `event`/`timestamp`)."""
    created = iso(event.created_at)
    return {"id": event.id, "type": event.type, "created_at": created, "data": event.data,
            "event": event.type, "timestamp": created}


# --- delivery ---------------------------------------------------------------------------------------

def backoff(failed_attempts: int, settings: WebhookSettings | None = None) -> float:
    """Seconds to wait after the `failed_attempts`-th failed attempt: base × 2^(n-1), capped."""
    s = settings or webhook_settings()
    return min(s.backoff_seconds * (2 ** max(failed_attempts - 1, 0)), s.max_backoff_seconds)


def load_secret(block_name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(block_name).get())


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
            .where(WebhookDelivery.status == "pending", col(WebhookDelivery.next_attempt_at).is_not(None),
                   col(WebhookDelivery.next_attempt_at) <= now)
            .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.created_at))
            .limit(limit)).all()
        for delivery_id, webhook_id, at in due:
            result = session.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == "pending",
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


def iso_precise(value: datetime) -> str:
    return _utc(value).isoformat().replace("+00:00", "Z")


def _deliver_one(delivery_id: str, client: httpx.Client, settings: WebhookSettings,
                 secret_cache: dict[str, str]) -> str:
    """Send one claimed delivery and record the attempt; returns its new status."""
    from weft.db import session_scope

    with session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status != "pending":
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
            secret_cache[hook.secret_block] = load_secret(hook.secret_block)
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
            status, next_at = "delivered", None
        elif final or len(attempts) >= settings.max_attempts:
            status, next_at = "failed", None
        else:
            status, next_at = "pending", now + timedelta(seconds=backoff(len(attempts), settings))
        delivery.attempts, delivery.status, delivery.next_attempt_at, delivery.updated_at = \
            attempts, status, next_at, now
        session.add(delivery)
    if status == "failed":
        log.warning("webhook delivery %s failed after %d attempt(s): %s", delivery_id, len(attempts),
                    attempt.get("error"))
    return status


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


def _safe_deliver(delivery_id: str, client: httpx.Client, settings: WebhookSettings,
                  secret_cache: dict[str, str]) -> None:
    try:
        _deliver_one(delivery_id, client, settings, secret_cache)
    except Exception:  # the lease expires and a later round tries again
        log.exception("webhook delivery %s could not be processed", delivery_id)


# --- workflow events from Prefect -------------------------------------------------------------------

def _flow_runs(flow_run_ids: list[str]) -> dict[str, tuple[str, str | None, bool]]:
    """Status, reason and whether it ever started, per flow run id (one Prefect call)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from weft.runs import status_of

    ids = []
    for i in flow_run_ids:
        try:
            ids.append(UUID(i))
        except ValueError:
            continue
    if not ids:
        return {}
    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
    out = {}
    for run in found:
        status, reason = status_of(run)
        out[str(run.id)] = (status, reason, run.start_time is not None or status == "RUNNING")
    return out


def workflow_key(workflow: Workflow, status: str) -> str:
    """The outbox key of a workflow transition (`created`, or the run's weft status)."""
    if status == "created":
        return f"workflow:{workflow.id}:created"
    return f"workflow:{workflow.id}:{workflow.run_count}:{status}"


def workflow_data(session: Session, workflow: Workflow, status: str, reason: str | None = None) -> dict[str, Any]:
    """Document 000's `data` of a workflow event."""
    name = workflow.name
    if name is None:
        try:
            from weft.workflows import merged_data, stored_steps

            name = merged_data(stored_steps(session, workflow.id)).get("name")
        except Exception:  # the name is a nicety
            name = None
    data: dict[str, Any] = {"workflow_id": workflow.id, "workflow_type": workflow.workflow_type, "name": name,
                            "status": status.lower(), "flow_run_id": workflow.flow_run_id,
                            "run_number": workflow.run_count}
    if reason:
        data["reason"] = reason
    if status == "COMPLETED":
        from weft.tables import Model

        model = session.exec(select(Model).where(Model.workflow_id == workflow.id)
                             .order_by(col(Model.created_at).desc())).first()
        if model is not None:
            data["output"] = {"model_id": model.id}
    return data


def reconcile(since: datetime, *, flow_run_ids: list[str] | None = None, limit: int = 1000) -> int:
    """Emit the workflow events that are due and not yet emitted; returns how many were emitted.

    Looks at workflows created or changed since `since`, and at every triggered workflow whose stored
    status is not final (or only those running `flow_run_ids`), reads their flow runs from Prefect in
    one call, stores the new status, and emits `workflow.created`, `workflow.started` (once the run has
    started) and `workflow.completed/failed/cancelled`. Each has a fixed key, so calling this again, from
    another process or after a restart, emits nothing twice. Synchronous: call it from a thread."""
    from weft.db import session_scope
    from weft.runs import TERMINAL

    since = _utc(since)
    emitted = 0
    with session_scope() as session:
        stmt = select(Workflow)
        if flow_run_ids is not None:
            stmt = stmt.where(col(Workflow.flow_run_id).in_(flow_run_ids))
        else:
            stmt = stmt.where(or_(
                (col(Workflow.flow_run_id).is_not(None)) & (col(Workflow.status).not_in(TERMINAL)),
                col(Workflow.updated_at) >= since, col(Workflow.created_at) >= since))
        workflows = session.exec(stmt.order_by(col(Workflow.updated_at).desc()).limit(limit)).all()
        if not workflows:
            return 0
        # skip what is known to be done: the keys already in the outbox
        wanted: dict[str, list[str]] = {}
        for wf in workflows:
            keys = [workflow_key(wf, "created")]
            if wf.flow_run_id:
                keys += [workflow_key(wf, "RUNNING")]
                if wf.status in TERMINAL:
                    keys.append(workflow_key(wf, wf.status))
            wanted[wf.id] = keys
        all_keys = [k for keys in wanted.values() for k in keys]
        existing: set[str] = set()
        for i in range(0, len(all_keys), 500):
            existing.update(session.exec(select(Event.key).where(col(Event.key).in_(all_keys[i:i + 500]))).all())

        for wf in workflows:
            if workflow_key(wf, "created") not in existing and _utc(wf.created_at) >= since:
                emitted += bool(emit(session, "workflow.created", workflow_data(session, wf, "PENDING"),
                                     key=workflow_key(wf, "created"), user_id=wf.user_id))
        live = [wf for wf in workflows if wf.flow_run_id and not (
            wf.status in TERMINAL and all(k in existing for k in wanted[wf.id][1:]))]
        if not live:
            return emitted
        runs = _flow_runs([wf.flow_run_id for wf in live])
        now = utcnow()
        for wf in live:
            if wf.flow_run_id not in runs:
                continue
            status, reason, started = runs[wf.flow_run_id]
            if (status, reason) != (wf.status, wf.reason):
                wf.status, wf.reason, wf.updated_at = status, reason, now
                session.add(wf)
            if started:  # a run can finish between two polls: its start is still an event of its own
                key = workflow_key(wf, "RUNNING")
                if key not in existing:
                    emitted += bool(emit(session, "workflow.started", workflow_data(session, wf, "RUNNING"),
                                         key=key, user_id=wf.user_id))
            if status in WORKFLOW_EVENTS and status != "RUNNING":
                key = workflow_key(wf, status)
                if key not in existing:
                    emitted += bool(emit(session, WORKFLOW_EVENTS[status], workflow_data(session, wf, status, reason),
                                         key=key, user_id=wf.user_id))
    return emitted


def prefect_configured() -> bool:
    """Whether a Prefect API URL is set (without one, Prefect's client would start a private server)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


# --- the background service -------------------------------------------------------------------------

class WebhookService:
    """The API's background work for webhooks: a loop that reconciles workflow events and delivers due
    deliveries every `poll_seconds`, and (optionally) a Prefect flow-run event subscription that
    reconciles one run at once. All database and HTTP work runs in worker threads.

    A new instance is what a restarted API has: it re-checks workflows changed within `lookback_seconds`
    before its creation, and the outbox keys make sure nothing is emitted twice."""

    def __init__(self, *, poll_seconds: float | None = None, subscribe: bool | None = None,
                 lookback_seconds: float | None = None, deliver_limit: int = 50) -> None:
        s = webhook_settings()
        self.poll_seconds = s.poll_seconds if poll_seconds is None else poll_seconds
        self.subscribe = s.subscribe if subscribe is None else subscribe
        lookback = s.lookback_seconds if lookback_seconds is None else lookback_seconds
        self.since = utcnow() - timedelta(seconds=lookback)
        self.deliver_limit = deliver_limit
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._warned: set[str] = set()
        self.subscribed = False  # true while the Prefect event subscription is connected
        self.rounds = 0  # poll rounds finished (ok or not)

    # one round, also usable on its own (tests, a CLI)
    async def tick(self) -> tuple[int, int]:
        """Reconcile, then deliver what is due; returns (events emitted, deliveries attempted)."""
        if not prefect_configured():  # run states and signing secrets both live in Prefect
            self._warn_once("no-prefect", "PREFECT_API_URL is not set: webhook events and deliveries are paused")
            return 0, 0
        emitted = await anyio.to_thread.run_sync(reconcile, self.since)
        sent = await self.deliver()
        return emitted, sent

    async def deliver(self) -> int:
        total = 0
        while True:  # drain: a burst of events goes out in one tick
            sent = await anyio.to_thread.run_sync(lambda: deliver_due(self.deliver_limit))
            total += sent
            if sent < self.deliver_limit:
                return total

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="weft-webhooks-poll"))
        if self.subscribe and prefect_configured():
            self._tasks.append(asyncio.create_task(self._subscription_loop(), name="weft-webhooks-events"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await asyncio.wait_for(task, timeout=15)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
            except Exception:
                log.exception("webhook task %s ended with an error", task.get_name())

    def wake(self) -> None:
        """Run the next round now (e.g. right after an event was committed)."""
        self._wake.set()

    async def _poll_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self.tick()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("webhook round failed (%d in a row): %s", failures, exc, exc_info=failures == 1)
            self.rounds += 1
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds * min(2 ** failures, 30))
            except asyncio.TimeoutError:
                pass

    async def _subscription_loop(self) -> None:
        """Listen to `prefect.flow-run.*` events and reconcile their runs at once; reconnects with a
        growing pause. Events missed while disconnected are picked up by the poll."""
        pause = 1.0
        while True:
            try:
                await self._subscribe_once()
                pause = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._warn_once(f"sub:{type(exc).__name__}", f"Prefect event subscription unavailable ({exc}); "
                                "the poll keeps webhook events flowing")
            self.subscribed = False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 60.0)

    async def _subscribe_once(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

        event_filter = EventFilter(event=EventNameFilter(prefix=["prefect.flow-run."]),
                                   occurred=EventOccurredFilter(since=datetime.now(timezone.utc)))
        async with get_events_subscriber(filter=event_filter, reconnection_attempts=2) as subscriber:
            self.subscribed = True
            async for event in subscriber:
                resource_id = event.resource.id
                if not resource_id.startswith("prefect.flow-run."):
                    continue
                flow_run_id = resource_id.removeprefix("prefect.flow-run.")
                try:
                    emitted = await anyio.to_thread.run_sync(
                        lambda: reconcile(self.since, flow_run_ids=[flow_run_id]))
                    if emitted:
                        await self.deliver()
                except Exception as exc:  # the poll will retry this run
                    log.warning("reconciling flow run %s after %s failed: %s", flow_run_id, event.event, exc)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)
