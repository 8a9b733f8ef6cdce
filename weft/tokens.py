"""weft's access tokens: HS256 JWTs (sub = user id, iat, exp, typ = access) signed with the settings' key.
The API issues and checks them; a flow that calls the API as its workflow's owner issues a short-lived one."""

from __future__ import annotations

from datetime import timedelta

import jwt

from weft.clock import utcnow
from weft.settings import get_settings


def create_access_token(user_id: str, seconds: int | None = None) -> tuple[str, int]:
    """A signed token for `user_id` and its lifetime in seconds (the settings' `jwt_expires_seconds` by default)."""
    settings = get_settings()
    expires = seconds or settings.jwt_expires_seconds
    now = utcnow()
    claims = {"sub": user_id, "iat": now, "exp": now + timedelta(seconds=expires), "typ": "access"}
    return jwt.encode(claims, settings.signing_key(), algorithm="HS256"), expires


def decode_access_token(token: str) -> str | None:
    """The user id of a valid, unexpired token, else None."""
    try:
        claims = jwt.decode(token, get_settings().signing_key(), algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    return claims.get("sub")
