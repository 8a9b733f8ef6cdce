"""The inference gateway: least-loaded routing over an endpoint's healthy replicas, retry on a dead
one, 503 when none is left, and a record of every request written after the response is sent."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import httpx
from sqlmodel import Session, select

from api.errors import ApiError
from weft.db import get_engine
from weft.settings import get_settings
from weft.tables import Credential, Endpoint, InferenceRecord, Replica, utcnow

DEAD_SECONDS = 10.0  # a replica that refused a connection sits out this long
CACHE_SECONDS = 0.5  # how long a replica list read from the database is reused


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
    def __init__(self) -> None:
        self.in_flight: dict[str, int] = defaultdict(int)
        self.served: dict[str, int] = defaultdict(int)
        self.dead_until: dict[str, float] = {}
        self.cache: dict[str, tuple[float, list[Replica]]] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=2.0),
                                        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))

    async def aclose(self) -> None:
        await self.client.aclose()

    def _healthy_from_db(self, endpoint_id: str) -> list[Replica]:
        fresh = utcnow() - timedelta(seconds=get_settings().replica_stale_seconds)
        with Session(get_engine()) as s:
            return list(s.exec(select(Replica).where(Replica.endpoint_id == endpoint_id, Replica.state == "healthy",
                                                     Replica.last_seen >= fresh, Replica.url.is_not(None))))

    async def replicas(self, endpoint_id: str) -> list[Replica]:
        now = time.monotonic()
        cached = self.cache.get(endpoint_id)
        if cached and cached[0] > now:
            return cached[1]
        rows = await anyio.to_thread.run_sync(self._healthy_from_db, endpoint_id)
        self.cache[endpoint_id] = (now + CACHE_SECONDS, rows)
        return rows

    def pick(self, candidates: list[Replica]) -> Replica:
        low = min(self.in_flight[r.id] for r in candidates)
        return random.choice([r for r in candidates if self.in_flight[r.id] == low])

    async def call(self, endpoint: Endpoint, path: str, body: dict[str, Any] | None, method: str = "POST") -> Result:
        """Send `body` to `path` (e.g. /v1/completions, /tokenize) of the endpoint: least-loaded healthy
        replica, the next one when a replica fails to answer, 503 when none can."""
        if endpoint.status != "active":
            raise ApiError(503, "SERVICE_UNAVAILABLE", f"endpoint {endpoint.name} is {endpoint.status}",
                           {"endpoint_id": endpoint.id})
        if endpoint.kind == "proxy":
            target = await anyio.to_thread.run_sync(proxy_target, endpoint)
            return await self._send(target, path.removeprefix("/v1"), body, method)
        tried: set[str] = set()
        while True:
            now = time.monotonic()
            candidates = [r for r in await self.replicas(endpoint.id)
                          if r.id not in tried and self.dead_until.get(r.id, 0) < now]
            if not candidates:
                raise ApiError(503, "SERVICE_UNAVAILABLE", f"no healthy replica of endpoint {endpoint.name}",
                               {"endpoint_id": endpoint.id, "tried": sorted(tried)})
            replica = self.pick(candidates)
            tried.add(replica.id)
            try:
                result = await self._send(Target(replica.id, replica.url, {}, endpoint.name), path, body, method)
            except httpx.TransportError:
                self.dead_until[replica.id] = time.monotonic() + DEAD_SECONDS
                continue
            if result.status_code >= 500:
                continue
            return result

    async def _send(self, target: Target, path: str, body: dict[str, Any] | None, method: str) -> Result:
        key = target.replica_id or "proxy"
        self.in_flight[key] += 1
        start = time.perf_counter()
        try:
            response = await self.client.request(method, f"{target.url}{path}", headers=target.headers,
                                                 json=None if body is None else {**body, "model": target.model})
        finally:
            self.in_flight[key] -= 1
        self.served[key] += 1
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": {"message": response.text[:500]}}
        return Result(response.status_code, payload, target.replica_id, (time.perf_counter() - start) * 1000)


def proxy_target(endpoint: Endpoint) -> Target:
    """A cloud endpoint: the provider's OpenAI-compatible base URL with the stored credential."""
    from prefect.blocks.system import Secret

    with Session(get_engine()) as s:
        credential = s.get(Credential, endpoint.credential_id or "")
    if credential is None or not endpoint.proxy_url:
        raise ApiError(503, "SERVICE_UNAVAILABLE", f"endpoint {endpoint.name} has no provider URL or credential")
    secret = Secret.load(credential.block_name).get()
    return Target(None, endpoint.proxy_url.rstrip("/"), {"Authorization": f"Bearer {secret}"}, endpoint.proxy_model)


def record(endpoint_id: str | None, replica_id: str | None, user_id: str | None, route: str, latency_ms: float,
           status_code: int, body: dict[str, Any] | None, prompt: str | None, error: str | None = None) -> None:
    """Store one request (runs after the response went out)."""
    usage = (body or {}).get("usage") or {}
    with Session(get_engine()) as s:
        s.add(InferenceRecord(endpoint_id=endpoint_id, replica_id=replica_id, user_id=user_id, route=route,
                              latency_ms=latency_ms, tokens_in=usage.get("prompt_tokens", 0),
                              tokens_out=usage.get("completion_tokens", 0), status_code=status_code, error=error,
                              prompt=prompt[:20_000] if prompt else None))
        s.commit()


def prompt_text(body: dict[str, Any]) -> str | None:
    """The prompt as text (completions `prompt`, or the chat's user turns) for drift monitoring."""
    if isinstance(body.get("prompt"), str):
        return body["prompt"]
    if isinstance(body.get("prompt"), list):
        return "\n".join(str(p) for p in body["prompt"])
    if isinstance(body.get("messages"), list):
        return "\n".join(str(m.get("content", "")) for m in body["messages"] if m.get("role") == "user")
    return None
