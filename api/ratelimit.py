"""Fixed-window rate limiting with `X-RateLimit-*` headers on every response.

Written here rather than taken from a library (slowapi, fastapi-limiter) because the contract is
three headers on *every* response, a 429 in weft's error format and a limit read at request time;
that is a dict and forty lines, while the libraries bring decorators per route or a Redis server.
The window is per process, right for the embedded default; behind several API replicas, put the
limit in the gateway.
"""

from __future__ import annotations

import hashlib
import time

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.security import decode_access_token
from weft.settings import get_settings

WINDOW = 60
MAX_TRACKED = 100_000


def identity(request: Request) -> str:
    """The bucket of a request: its API key, else its token's subject, else its client address."""
    if key := request.headers.get("x-api-key"):
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and (subject := decode_access_token(token.strip())):
        return "user:" + subject
    return "ip:" + (request.client.host if request.client else "unknown")


class RateLimiter:
    """ASGI middleware: count requests per identity per minute; over the limit answer 429."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.windows: dict[str, tuple[int, int]] = {}  # identity -> (window number, count)

    def hit(self, key: str, window: int) -> int:
        """Count one request (no await inside: atomic on the event loop)."""
        start, count = self.windows.get(key, (window, 0))
        count = count + 1 if start == window else 1
        self.windows[key] = (window, count)
        if len(self.windows) > MAX_TRACKED:
            self.windows = {k: v for k, v in self.windows.items() if v[0] == window}
        return count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        limit = get_settings().rate_limit_per_minute  # read per request so it can change at run time
        now = time.time()
        window = int(now // WINDOW)
        count = self.hit(identity(request), window)
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
