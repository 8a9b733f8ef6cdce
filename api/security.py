"""Passwords (bcrypt) and API keys (shown once, stored as sha256); access tokens are `weft.tokens`."""

from __future__ import annotations

import hashlib
import secrets

import bcrypt

API_KEY_PREFIX = "sk_weft_"


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt()).decode()


def verify_password(password: str, hashed: str) -> bool:
    return bcrypt.checkpw(password.encode()[:72], hashed.encode())


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # API keys carry 256 random bits, so a fast hash is safe and keeps every request cheap
    return hashlib.sha256(key.encode()).hexdigest()
