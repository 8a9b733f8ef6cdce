"""The signing secret of a webhook and the `X-Weft-Signature` header: HMAC-SHA256 over `f"{t}.{body}"`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from weft.secret_blocks import block_name

SIGNATURE_HEADER = "X-Weft-Signature"


def generate_secret() -> str:
    """A new random signing secret."""
    return f"whsec_{secrets.token_urlsafe(32)}"


def secret_block_name(webhook_id: str) -> str:
    """The Prefect Secret block holding a webhook's signing secret."""
    return block_name("webhook", webhook_id)


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
