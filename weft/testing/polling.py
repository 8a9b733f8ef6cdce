"""What benchmarks that drive a real platform over HTTP share: an answer's JSON or a clear error, and
polling until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def ok(r: Any, status: int = 200) -> Any:
    """The JSON of an httpx response with `status`; RuntimeError naming the call and the answer otherwise."""
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:2000]}")
    return r.json()


def wait_for(check: Callable[[], T], what: str, timeout: float, poll: float = 0.25) -> T:
    """`check()`'s first truthy value, polled every `poll` seconds; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
