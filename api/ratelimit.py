"""Fixed-window rate limiting with `X-RateLimit-*` headers on every response.

Written here rather than taken from a library (slowapi, fastapi-limiter) because the contract is
three headers on *every* response, a 429 in weft's error format and a limit read at request time,
while the libraries bring decorators per route or a Redis server.

The count lives in the database (`rate_limit_window`: one row per identity and minute), so the limit
holds for all the API processes sharing it (uvicorn workers, instances behind a load balancer). Each
request costs one atomic statement, `INSERT ... ON CONFLICT DO UPDATE SET hits = hits + 1 RETURNING
hits` (SQLite ≥ 3.35 and PostgreSQL), in a transaction of its own on a worker thread (~0.5–1.5 ms
measured on both). Once a minute each process deletes the windows before the previous one, in the
background (a primary-key range). While the database cannot be reached, each process counts in memory
(the limit then holds per process) and tries the database again after FALLBACK_SECONDS, so the limiter
never turns an outage into errors of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from functools import lru_cache

import anyio
from fastapi import Request
from sqlalchemy import Insert, bindparam, delete
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from weft.db import database_unavailable, get_engine
from weft.settings import get_settings
from weft.tables import RateLimitWindow
from weft.tokens import decode_access_token

log = logging.getLogger("weft.api")

WINDOW = 60
FALLBACK_SECONDS = 1.0  # after a failed count, how long requests are counted in memory only
MAX_TRACKED = 100_000
TABLE = RateLimitWindow.__table__


def identity(request: Request) -> str:
    """The bucket of a request: its API key, else its token's subject, else its client address."""
    if key := request.headers.get("x-api-key"):
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and (subject := decode_access_token(token.strip())):
        return "user:" + subject
    return "ip:" + (request.client.host if request.client else "unknown")


@lru_cache
def _upsert(dialect: str) -> Insert:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(TABLE).values(window_number=bindparam("window"), identity=bindparam("identity"), hits=1)
    return stmt.on_conflict_do_update(index_elements=[TABLE.c.window_number, TABLE.c.identity],
                                      set_={"hits": TABLE.c.hits + 1}).returning(TABLE.c.hits)


def count_hit(key: str, window: int) -> int:
    """Count one request of `key` in `window` (unix time // WINDOW); returns the window's count so far."""
    engine = get_engine()
    with engine.begin() as conn:  # measured cheaper than an AUTOCOMMIT connection
        return conn.execute(_upsert(engine.dialect.name), {"window": window, "identity": key}).scalar_one()


def prune(before: int) -> None:
    """Delete the windows before `before`."""
    try:
        with get_engine().begin() as conn:
            conn.execute(delete(TABLE).where(TABLE.c.window_number < before))
    except Exception as exc:  # the next minute's prune takes them
        log.warning("could not prune old rate-limit windows: %s", exc)


class RateLimiter:
    """ASGI middleware: count requests per identity per minute; over the limit answer 429."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pruned_at = 0  # the last window this process pruned in
        self.db_retry_at = 0.0  # monotonic time before which requests are counted in memory
        self.windows: dict[str, tuple[int, int]] = {}  # in memory: identity -> (window number, count)

    def hit_in_memory(self, key: str, window: int) -> int:
        """Count one request in this process only (no await inside: atomic on the event loop)."""
        start, count = self.windows.get(key, (window, 0))
        count = count + 1 if start == window else 1
        self.windows[key] = (window, count)
        if len(self.windows) > MAX_TRACKED:
            self.windows = {k: v for k, v in self.windows.items() if v[0] == window}
        return count

    async def hit(self, key: str, window: int) -> int:
        """Count one request in the database, or in memory while the database is failing."""
        if time.monotonic() >= self.db_retry_at:
            try:
                count = await anyio.to_thread.run_sync(count_hit, key, window)
            except Exception as exc:
                if self.db_retry_at == 0.0:  # once per outage, not per request
                    log.warning("rate limit counted per process: the database %s (%s)",
                                "is unavailable" if database_unavailable(exc) else "failed", type(exc).__name__,
                                exc_info=not database_unavailable(exc))
                self.db_retry_at = time.monotonic() + FALLBACK_SECONDS
            else:
                if self.db_retry_at:
                    log.warning("rate limit counted in the database again")
                    self.db_retry_at = 0.0
                    self.windows.clear()
                return count
        return self.hit_in_memory(key, window)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        limit = get_settings().rate_limit_per_minute  # read per request so it can change at run time
        now = time.time()
        window = int(now // WINDOW)
        if window > self.pruned_at:
            self.pruned_at = window
            asyncio.get_running_loop().run_in_executor(None, prune, window - 1)
        count = await self.hit(identity(request), window)
        reset = (window + 1) * WINDOW
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - count)),
                   "X-RateLimit-Reset": str(reset)}
        if count > limit:
            headers["Retry-After"] = str(max(1, int(reset - now)))
            response = error_response(request, 429, "RATE_LIMITED", f"rate limit of {limit} requests per minute "
                                      "exceeded", {"limit": limit, "window_seconds": WINDOW, "reset": reset}, headers)
            return await response(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)
