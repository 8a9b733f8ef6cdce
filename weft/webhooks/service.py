"""`WebhookService`: the API's background loop (reconcile + deliver) and its Prefect event subscription."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

import anyio

from weft.clock import utcnow
from weft.db import database_unavailable
from weft.settings import webhook_settings
from weft.webhooks.delivery import deliver_due
from weft.webhooks.reconcile import reconcile

log = logging.getLogger(__name__)


def prefect_configured() -> bool:
    """Whether a Prefect API URL is set (without one, Prefect's client would start a private server)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


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
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:
                log.exception("webhook task %s ended with an error", task.get_name())

    async def _poll_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self.tick()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database or Prefect outage: keep polling, slower
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    outage = database_unavailable(exc)
                    log.warning("webhook round failed (%d in a row)%s: %s", failures,
                                ", the database is unavailable" if outage else "", (str(exc).splitlines() or [""])[0],
                                exc_info=failures == 1 and not outage)
            self.rounds += 1
            await asyncio.sleep(self.poll_seconds * min(2 ** failures, 30))

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
                                   occurred=EventOccurredFilter(since=utcnow()))
        async with get_events_subscriber(filter=event_filter, reconnection_attempts=2) as subscriber:
            self.subscribed = True
            async for event in subscriber:
                resource_id = event.resource.id
                if not resource_id.startswith("prefect.flow-run."):
                    continue
                flow_run_id = resource_id.removeprefix("prefect.flow-run.")
                try:
                    emitted = await anyio.to_thread.run_sync(
                        partial(reconcile, self.since, flow_run_ids=[flow_run_id]))
                    if emitted:
                        await self.deliver()
                except Exception as exc:  # the poll will retry this run
                    log.warning("reconciling flow run %s after %s failed: %s", flow_run_id, event.event, exc)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)
