"""Passwords (bcrypt), JWT access tokens (HS256) and API keys (shown once, stored as sha256)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

import bcrypt
import jwt

from weft.clock import utcnow
from weft.settings import get_settings

API_KEY_PREFIX = "sk_weft_"


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt()).decode()


def verify_password(password: str, hashed: str) -> bool:
    return bcrypt.checkpw(password.encode()[:72], hashed.encode())


def create_access_token(user_id: str) -> tuple[str, int]:
    """A signed token for `user_id` and its lifetime in seconds."""
    settings = get_settings()
    expires = settings.jwt_expires_seconds
    now = utcnow()
    claims = {"sub": user_id, "iat": now, "exp": now + timedelta(seconds=expires), "typ": "access"}
    return jwt.encode(claims, settings.signing_key(), algorithm="HS256"), expires


def decode_access_token(token: str) -> str | None:
    """The user id of a valid, unexpired token, else None."""
    try:
        claims = jwt.decode(token, get_settings().signing_key(), algorithms=["HS256"],
                            options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    return claims.get("sub")


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # API keys carry 256 random bits, so a fast hash is safe and keeps every request cheap
    return hashlib.sha256(key.encode()).hexdigest()
