"""Webhooks: an outbox of events, signed HTTP deliveries with retries, and workflow events from Prefect.

How it fits together
--------------------
- `outbox.emit(session, type, data, key=..., user_id=...)` writes one `Event` row (the outbox) and one
  pending `WebhookDelivery` per active webhook of that user subscribed to `type`, in the caller's
  transaction: the event exists exactly when the change it describes was committed. `key` makes an event
  unique; emitting the same key again (a replay, a restart, two API processes) does nothing and returns None.
- `delivery.deliver_due()` POSTs due pending deliveries, records every attempt (`at, status_code, error,
  duration_ms`) and retries failures with exponential backoff: `WEFT_WEBHOOK_BACKOFF_SECONDS` × 2^(n-1)
  after the n-th failed attempt (capped by `WEFT_WEBHOOK_MAX_BACKOFF_SECONDS`), up to
  `WEFT_WEBHOOK_MAX_ATTEMPTS` attempts, then `failed`. A delivery is leased before it is sent (a conditional
  update of its `next_attempt_at`, read `FOR UPDATE SKIP LOCKED` on PostgreSQL) and the lease is renewed
  just before each attempt, so two workers or API processes never send the same attempt; one that dies
  holding a lease leaves the delivery due again after `WEFT_WEBHOOK_LEASE_SECONDS`, and one other worker
  sends it. The knobs are `weft.settings.WebhookSettings`.
- Workflow events come from Prefect: `reconcile.reconcile(since)` compares weft's workflows with their flow
  runs and emits `workflow.created/started/completed/failed/cancelled` with the keys
  `workflow:{id}:created` and `workflow:{id}:{run_count}:{STATUS}`, so each transition is emitted once,
  across restarts and API processes (on PostgreSQL reconciles also take turns, by an advisory lock).
  `service.WebhookService` runs that poll (plus delivery) every `WEFT_WEBHOOK_POLL_SECONDS`,
  and a subscription to Prefect's `prefect.flow-run.*` events that runs the same reconcile for one run as
  soon as its state changes; when the subscription is down, the poll still covers everything.
- `signing` holds the HMAC signature and where a webhook's signing secret lives (a Prefect Secret block).

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

from weft.webhooks.outbox import EVENT_TYPES, TEST_EVENT, emit
from weft.webhooks.service import WebhookService
from weft.webhooks.signing import generate_secret, secret_block_name, sign, verify

__all__ = ["EVENT_TYPES", "TEST_EVENT", "WebhookService", "emit", "generate_secret", "secret_block_name", "sign",
           "verify"]
