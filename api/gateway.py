"""The inference gateway: a revision by the endpoint's traffic split, then the least-loaded of its healthy
replicas; retry on a dead one; a request that finds no replica waits for one (a cold start: it marks the
demand the controller scales from zero on) up to the endpoint's `timeout_seconds`, then 503; while a
request is in flight its revision's demand mark is renewed too (the autoscaler reads load from records
written when requests end); and a record of every request, with its revision, written after the response
is sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
from sqlalchemy import update
from sqlmodel import Session, col, select

from api.errors import ApiError
from weft.clock import utcnow
from weft.db import database_unavailable, get_engine
from weft.secret_blocks import read_secret
from weft.serving.rotation import in_rotation
from weft.statuses import SERVING
from weft.tables import Credential, Endpoint, HostedAdapter, InferenceRecord, Replica, Revision

log = logging.getLogger(__name__)
DEAD_SECONDS = 10.0  # a replica that refused a connection sits out this long
CACHE_SECONDS = 0.5  # how long a replica list read from the database is reused
RECORD_RETRY_SECONDS = 1.0  # while the database is unavailable, how often queued records are retried
HOLD_POLL_SECONDS = 0.25  # how often a request waiting for a replica looks again
DEMAND_SECONDS = 1.0  # how often a waiting endpoint's (or a busy revision's) demand mark is renewed


@dataclass(frozen=True)
class Candidate:
    """A replica in rotation, with its revision and that revision's share of the traffic. `model` is the
    name it serves the revision under when it is a replica of the adapter's base (see weft.serving.hosting)."""

    id: str
    url: str
    revision_id: str
    traffic: int
    model: str | None = None


@dataclass(frozen=True)
class Target:
    replica_id: str | None
    url: str  # the server's root (a replica) or the provider's OpenAI base URL ending in /v1 (a proxy)
    headers: dict[str, str]
    model: str  # the `model` the target expects


@dataclass
class Result:
    status_code: int
    body: dict[str, Any]
    replica_id: str | None
    latency_ms: float


class Gateway:
    """One per API process. Its state is this process's own view, on purpose: the requests it has in
    flight per replica (least-loaded routing), the replicas it found dead, the replica lists and endpoints it read
    (CACHE_SECONDS old at most). Rotation itself is in the database, shared by every process."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = defaultdict(int)
        self.dead_until: dict[str, float] = {}
        self.cache: dict[str, tuple[float, list[Candidate]]] = {}
        self.named: dict[tuple[str, str | None], tuple[float, Endpoint]] = {}  # (user, `model`) -> its endpoint
        self.revision_of: dict[tuple[str, str], str] = {}  # (endpoint, replica) -> revision, for the records
        self.demand_marked: dict[str, float] = {}
        self.busy_marker: asyncio.Task | None = None  # see mark_busy
        self.recorder = Recorder()
        self._client: aiohttp.ClientSession | None = None  # aiohttp: about half httpx's cost per proxied call

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:  # created inside the running loop
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=600, sock_connect=2),
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=60))
        return self._client

    async def aclose(self) -> None:
        if self.busy_marker is not None:
            self.busy_marker.cancel()
        await self.recorder.aclose()
        if self._client is not None:
            await self._client.close()

    def record(self, *args: Any, **kwargs: Any) -> None:
        """Queue one request's record (see `inference_record` for the fields)."""
        row = inference_record(*args, **kwargs)
        row.revision_id = self.revision_of.get((row.endpoint_id or "", row.replica_id or ""))
        self.recorder.add(row)

    def _healthy_from_db(self, endpoint_id: str) -> list[Candidate]:
        with Session(get_engine()) as s:
            rows = s.exec(select(Replica.id, Replica.url, Replica.revision_id, Revision.traffic)
                          .join(Revision, Revision.id == Replica.revision_id)
                          .where(Replica.endpoint_id == endpoint_id, in_rotation(), Revision.traffic > 0)).all()
            hosted = s.exec(select(Replica.id, Replica.url, HostedAdapter.revision_id, Revision.traffic,
                                   HostedAdapter.name)
                            .join(HostedAdapter, HostedAdapter.replica_id == Replica.id)
                            .join(Revision, Revision.id == HostedAdapter.revision_id)
                            .where(Revision.endpoint_id == endpoint_id, in_rotation(), Revision.traffic > 0)).all()
        return [Candidate(*row) for row in rows] + [Candidate(*row) for row in hosted]

    @staticmethod
    def _mark_demand(*where: Any) -> None:
        """Set `demand_at` (a request wants a replica) on the revisions matching `where`."""
        with Session(get_engine()) as s:
            s.exec(update(Revision).where(*where).values(demand_at=utcnow()))
            s.commit()

    async def mark_busy(self) -> None:
        """Every DEMAND_SECONDS, renew the demand mark of the revisions this process has requests in flight
        on. The autoscaler's load comes from records written when requests end, so a request longer than
        its windows (a long generation, or the one that waited through a cold start) would look like no
        load, and its replica could be scaled to zero under it; a fresh mark keeps one replica wanted."""
        failing = False
        while True:
            await asyncio.sleep(DEMAND_SECONDS)
            busy = sorted({rev for (_, r), rev in list(self.revision_of.items()) if self.in_flight.get(r, 0) > 0})
            if not busy:
                continue
            try:
                await anyio.to_thread.run_sync(self._mark_demand, col(Revision.id).in_(busy))
                failing = False
            except Exception as exc:  # the database is away: the marks resume when it is back
                if not failing:
                    log.warning("could not mark the revisions with requests in flight: %s", exc)
                failing = True

    async def wait_for_replica(self, endpoint: Endpoint, deadline: float) -> None:
        """Mark the endpoint's demand (at most every DEMAND_SECONDS) and wait one poll; 503 past `deadline`."""
        now = time.monotonic()
        if now > deadline:
            raise ApiError(503, "SERVICE_UNAVAILABLE", f"no healthy replica of endpoint {endpoint.name} within "
                           f"{endpoint.timeout_seconds:g} s", {"endpoint_id": endpoint.id})
        if self.demand_marked.get(endpoint.id, 0) < now - DEMAND_SECONDS:
            self.demand_marked[endpoint.id] = now
            await anyio.to_thread.run_sync(self._mark_demand, Revision.endpoint_id == endpoint.id, Revision.traffic > 0)
        await asyncio.sleep(HOLD_POLL_SECONDS)

    async def replicas(self, endpoint_id: str) -> list[Candidate]:
        now = time.monotonic()
        cached = self.cache.get(endpoint_id)
        if cached and cached[0] > now:
            return cached[1]
        rows = await anyio.to_thread.run_sync(self._healthy_from_db, endpoint_id)
        self.cache[endpoint_id] = (now + CACHE_SECONDS, rows)
        self.revision_of.update({(endpoint_id, r.id): r.revision_id for r in rows})
        return rows

    def forget(self, endpoint_id: str) -> None:
        """Drop what this process cached of the endpoint (its replica list, the names it was looked up by):
        its traffic split or status changed through this process. (Another API process sees the change
        within CACHE_SECONDS.)"""
        self.cache.pop(endpoint_id, None)
        for key in [k for k, (_, endpoint) in list(self.named.items()) if endpoint.id == endpoint_id]:
            self.named.pop(key, None)

    def pick(self, candidates: list[Candidate]) -> Candidate:
        """A revision by traffic share (among those with a replica here), then its least-loaded replica."""
        shares = {r.revision_id: r.traffic for r in candidates}
        revision = random.choices(list(shares), weights=list(shares.values()))[0]
        mine = [r for r in candidates if r.revision_id == revision]
        low = min(self.in_flight[r.id] for r in mine)
        return random.choice([r for r in mine if self.in_flight[r.id] == low])

    async def targets(self, endpoint: Endpoint, path: str) -> AsyncIterator[tuple[Target, str]]:
        """Where to send a request, in the order to try: the provider (a proxy endpoint), or a replica
        (see `pick`), then the next untried one; with none left, wait for one (see `wait_for_replica`)."""
        if endpoint.status not in SERVING:
            raise ApiError(503, "SERVICE_UNAVAILABLE", f"endpoint {endpoint.name} is {endpoint.status}",
                           {"endpoint_id": endpoint.id})
        if endpoint.kind == "proxy":
            yield await anyio.to_thread.run_sync(proxy_target, endpoint), path.removeprefix("/v1")
            return
        if self.busy_marker is None or self.busy_marker.done():
            self.busy_marker = asyncio.get_running_loop().create_task(self.mark_busy())
        tried: set[str] = set()
        deadline = time.monotonic() + endpoint.timeout_seconds
        while True:
            now = time.monotonic()
            candidates = [r for r in await self.replicas(endpoint.id)
                          if r.id not in tried and self.dead_until.get(r.id, 0) < now]
            if not candidates:
                await self.wait_for_replica(endpoint, deadline)
                continue
            replica = self.pick(candidates)
            tried.add(replica.id)
            yield Target(replica.id, replica.url, {}, replica.model or endpoint.slug or endpoint.name), path

    def unreachable(self, target: Target, exc: Exception) -> None:
        """A replica that did not answer sits out DEAD_SECONDS; an unreachable provider is a 502."""
        if target.replica_id is None:
            raise ApiError(502, "BAD_GATEWAY", f"the provider did not answer: {exc}") from exc
        self.dead_until[target.replica_id] = time.monotonic() + DEAD_SECONDS

    async def call(self, endpoint: Endpoint, path: str, body: dict[str, Any] | None, method: str = "POST", *,
                   retry: bool = True) -> Result:
        """Send `body` to `path` (e.g. /v1/completions, /tokenize) of the endpoint, trying `targets` in
        order until one answers without a server error. With `retry` off (a classic model's prediction,
        which may itself be what brings a replica down) only a refused connection moves on: a server
        error is the answer, and a replica that drops the request is a PREDICTION_ERROR."""
        async for target, target_path in self.targets(endpoint, path):
            try:
                result = await self._send(target, target_path, body, method)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                self.unreachable(target, exc)
                if retry or isinstance(exc, aiohttp.ClientConnectorError):
                    continue
                raise ApiError(500, "PREDICTION_ERROR", "the replica serving this request exited before it "
                               "answered (it is being replaced)", {"reason": "replica_exited"}) from exc
            if result.status_code >= 500 and target.replica_id and retry:
                continue
            return result
        raise AssertionError("targets() ends by raising")

    async def stream(self, endpoint: Endpoint, path: str, body: dict[str, Any]) -> tuple[Target, aiohttp.ClientResponse]:
        """Open a streamed request: the first target that answers with headers and no server error (a
        retry is only possible before the first byte). The caller reads and releases the response."""
        async for target, target_path in self.targets(endpoint, path):
            try:
                response = await self.client.request("POST", f"{target.url}{target_path}", headers=target.headers,
                                                     json={**body, "model": target.model})
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                self.unreachable(target, exc)
                continue
            if response.status >= 500 and target.replica_id:
                response.release()
                continue
            return target, response
        raise AssertionError("targets() ends by raising")

    async def _send(self, target: Target, path: str, body: dict[str, Any] | None, method: str) -> Result:
        key = target.replica_id or "proxy"
        self.in_flight[key] += 1
        start = time.perf_counter()
        try:
            async with self.client.request(method, f"{target.url}{path}", headers=target.headers,
                                           json=None if body is None else {**body, "model": target.model}) as response:
                raw = await response.read()
                status = response.status
        finally:
            self.in_flight[key] -= 1
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"error": {"message": raw[:500].decode(errors="replace")}}
        return Result(status, payload, target.replica_id, (time.perf_counter() - start) * 1000)


def proxy_target(endpoint: Endpoint) -> Target:
    """A cloud endpoint: the provider's OpenAI-compatible base URL with the stored credential."""
    with Session(get_engine()) as s:
        credential = s.get(Credential, endpoint.credential_id or "")
    if credential is None or not endpoint.proxy_url:
        raise ApiError(503, "SERVICE_UNAVAILABLE", f"endpoint {endpoint.name} has no provider URL or credential")
    secret = read_secret(credential.block_name)
    return Target(None, endpoint.proxy_url.rstrip("/"), {"Authorization": f"Bearer {secret}"}, endpoint.proxy_model)


def inference_record(endpoint_id: str | None, replica_id: str | None, user_id: str | None, route: str,
                     latency_ms: float, status_code: int, body: dict[str, Any] | None, prompt: str | None,
                     error: str | None = None) -> InferenceRecord:
    usage = (body or {}).get("usage") or {}
    return InferenceRecord(endpoint_id=endpoint_id, replica_id=replica_id, user_id=user_id, route=route,
                           latency_ms=latency_ms, tokens_in=usage.get("prompt_tokens", 0),
                           tokens_out=usage.get("completion_tokens", 0), status_code=status_code, error=error,
                           prompt=prompt[:20_000] if prompt else None)


class NotStored(Exception):
    """A batch the database refused before its commit: none of it is stored, so it may be retried."""


def write_records(rows: list[InferenceRecord]) -> None:
    """Store a batch in one transaction; failed requests become `prediction.error` events, one per
    endpoint and minute (the event key makes that hold across API processes). Raises `NotStored` when
    the database is unavailable before the commit; a failure in the commit itself may have stored the
    batch and is not retried, so no request is recorded twice."""
    from weft.webhooks.outbox import emit

    with Session(get_engine()) as s:
        try:
            s.add_all(rows)
            for row in rows:
                if row.status_code >= 500 and row.endpoint_id and row.user_id:
                    minute = row.created_at.strftime("%Y-%m-%dT%H:%M")
                    emit(s, "prediction.error", {"deployment_id": row.endpoint_id, "route": row.route,
                                                 "status_code": row.status_code, "error": row.error,
                                                 "minute": minute},
                         key=f"prediction.error:{row.endpoint_id}:{minute}", user_id=row.user_id)
            s.flush()
        except Exception as exc:
            if database_unavailable(exc):
                raise NotStored(f"{len(rows)} inference records not stored: the database is unavailable") from exc
            raise
        s.commit()


class Recorder:
    """Request records go to a queue that a background task writes in batches, so recording never
    delays a response (nor, on a kept-alive connection, the next request). Each API process records
    the requests it served. While the database is unavailable the records wait in the queue (up to
    `max_pending`, the oldest dropped beyond) and are written once it is back."""

    def __init__(self, batch: int = 500, interval: float = 0.2, max_pending: int = 100_000) -> None:
        self.queue: asyncio.Queue[InferenceRecord] = asyncio.Queue()
        self.batch, self.interval, self.max_pending = batch, interval, max_pending
        self.task: asyncio.Task | None = None
        self.dropped = 0
        self.failing = False  # the last write found the database unavailable
        self.writing = asyncio.Lock()  # a drain waits for a batch being written by another

    def add(self, row: InferenceRecord) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())
        if self.queue.qsize() >= self.max_pending:
            self.queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning("dropped %d inference records: the database has been unavailable too long", self.dropped)
        self.queue.put_nowait(row)

    async def flush(self) -> bool:
        """Write one batch; False when the database is unavailable (the batch is queued again)."""
        rows = []
        while not self.queue.empty() and len(rows) < self.batch:
            rows.append(self.queue.get_nowait())
        if not rows:
            return True
        try:
            await anyio.to_thread.run_sync(write_records, rows)
        except NotStored as exc:
            if not self.failing:
                log.warning("%s; retrying every %.0f s", exc, RECORD_RETRY_SECONDS)
                self.failing = True
            for row in rows:  # fresh copies: the failed session may have touched the originals
                self.queue.put_nowait(InferenceRecord.model_validate(row.model_dump(exclude={"id"})))
            return False
        except Exception:  # a failed batch is logged, the gateway keeps serving
            log.exception("could not store %d inference records", len(rows))
        if self.failing:
            log.warning("inference records are stored again")
            self.failing = False
        return True

    async def drain(self) -> None:
        """Write what is queued now (a read of this process's own requests then sees them all); while the
        database is unavailable the records stay queued."""
        async with self.writing:
            while not self.queue.empty() and await self.flush():
                pass

    async def run(self) -> None:
        while True:
            await asyncio.sleep(RECORD_RETRY_SECONDS if self.failing else self.interval)
            await self.drain()

    async def aclose(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task  # a batch being written finishes first
        await self.drain()
        if not self.queue.empty():
            log.warning("%d inference records lost at shutdown: the database is unavailable", self.queue.qsize())


def prompt_text(body: dict[str, Any]) -> str | None:
    """The prompt as text (completions `prompt`, or the chat's user turns) for drift monitoring."""
    if isinstance(body.get("prompt"), str):
        return body["prompt"]
    if isinstance(body.get("prompt"), list):
        return "\n".join(str(p) for p in body["prompt"])
    if isinstance(body.get("messages"), list):
        return "\n".join(str(m.get("content", "")) for m in body["messages"] if m.get("role") == "user")
    return None
