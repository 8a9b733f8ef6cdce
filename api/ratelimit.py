"""Fixed-window rate limiting with `X-RateLimit-*` headers on every response.

Written here rather than taken from a library because the contract is three headers and a 429 in
weft's error format; a per-process window is right for the embedded default (behind several API
replicas, put the limit in the gateway).
"""

from __future__ import annotations

import hashlib
import threading
import time

from fastapi import Request
from starlette.middleware.base import BaseHTTPMiddleware

from api.errors import error_response
from weft.settings import get_settings

WINDOW = 60


class RateLimiter(BaseHTTPMiddleware):
    def __init__(self, app) -> None:
        super().__init__(app)
        self.lock = threading.Lock()
        self.windows: dict[str, tuple[int, int]] = {}

    @staticmethod
    def identity(request: Request) -> str:
        credential = request.headers.get("x-api-key") or request.headers.get("authorization")
        if credential:
            return "c:" + hashlib.sha256(credential.encode()).hexdigest()[:32]
        return "ip:" + (request.client.host if request.client else "unknown")

    async def dispatch(self, request: Request, call_next):
        limit = get_settings().rate_limit_per_minute  # read per request so it can be changed at run time
        window = int(time.time()) // WINDOW
        key = self.identity(request)
        with self.lock:
            start, count = self.windows.get(key, (window, 0))
            count = count + 1 if start == window else 1
            self.windows[key] = (window, count)
            if len(self.windows) > 100_000:
                self.windows = {k: v for k, v in self.windows.items() if v[0] == window}
        reset = (window + 1) * WINDOW
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - count)),
                   "X-RateLimit-Reset": str(reset)}
        if count > limit:
            headers["Retry-After"] = str(max(1, reset - int(time.time())))
            return error_response(request, 429, "RATE_LIMITED", f"rate limit of {limit} requests per minute exceeded",
                                  {"limit": limit, "window_seconds": WINDOW}, headers)
        response = await call_next(request)
        response.headers.update(headers)
        return response
