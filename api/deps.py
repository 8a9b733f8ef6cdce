"""Request dependencies: the database session and the authenticated user."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session, select

from api.errors import ApiError, not_found
from api.gateway import Gateway
from api.security import API_KEY_PREFIX, hash_api_key
from weft.clock import as_utc, utcnow
from weft.db import get_engine
from weft.tables import ApiKey, User
from weft.tokens import decode_access_token

T = TypeVar("T")


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": "Bearer"})


def _expired(at: datetime | None) -> bool:
    if at is None:
        return False
    return as_utc(at) <= utcnow()


def user_of_api_key(session: Session, key: str) -> User:
    api_key = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))).first()
    if api_key is None:
        raise unauthorized("invalid API key")
    if _expired(api_key.expires_at):
        raise unauthorized("API key expired")
    user = session.get(User, api_key.user_id)
    if user is None:
        raise unauthorized("invalid API key")
    return user


def user_of_token(session: Session, token: str) -> User:
    user_id = decode_access_token(token)
    user = session.get(User, user_id) if user_id else None
    if user is None:
        raise unauthorized("invalid or expired token")
    return user


# declared as security schemes so the OpenAPI docs offer both; neither raises, current_user decides
bearer_scheme = HTTPBearer(auto_error=False, description="JWT from /api/v1/auth/login or /api/v1/auth/token")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="key from /api/v1/auth/api-keys")


def resolve_user(session: Session, api_key: str | None, bearer: str | None) -> User:
    """The user of an API key (`X-API-Key`, or as a bearer token) or of a JWT bearer; 401 otherwise."""
    if api_key:
        return user_of_api_key(session, api_key)
    if not bearer:
        raise unauthorized("missing credentials: send Authorization: Bearer <token> or X-API-Key: <key>")
    if bearer.startswith(API_KEY_PREFIX):  # document 003 sends the API key as a bearer token
        return user_of_api_key(session, bearer)
    return user_of_token(session, bearer)


def current_user(session: SessionDep, api_key: Annotated[str | None, Depends(api_key_scheme)],
                 bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> User:
    """The user of `X-API-Key: <key>` or `Authorization: Bearer <JWT or key>`; 401 otherwise."""
    return resolve_user(session, api_key, bearer.credentials if bearer else None)


AUTH_CACHE_SECONDS = 5.0  # how long the gateway trusts a credential it has checked (revocation lag)
# Per process, deliberately not shared: each API process checks a credential against the database at
# most once per AUTH_CACHE_SECONDS, so a deleted or expired API key is refused by every process within
# that time. Only positive answers are kept; a refused credential is checked again on its next request.
_auth_cache: dict[str, tuple[float, str]] = {}


async def current_user_id(api_key: Annotated[str | None, Depends(api_key_scheme)],
                          bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> str:
    """The caller's id for the gateway's handlers: checked in a session closed at once (a request
    waiting on a replica holds no database connection) and remembered for AUTH_CACHE_SECONDS."""
    credential = api_key or (bearer.credentials if bearer else "")
    hit = _auth_cache.get(credential)
    now = time.monotonic()
    if credential and hit and hit[0] > now:
        return hit[1]

    def lookup() -> str:
        with Session(get_engine()) as session:
            return resolve_user(session, api_key, bearer.credentials if bearer else None).id

    user_id = await anyio.to_thread.run_sync(lookup)
    if len(_auth_cache) > 10_000:
        _auth_cache.clear()
    _auth_cache[credential] = (now + AUTH_CACHE_SECONDS, user_id)
    return user_id


CurrentUser = Annotated[User, Depends(current_user)]
CurrentUserId = Annotated[str, Depends(current_user_id)]


def get_owned(session: Session, table: type[T], row_id: str, user_id: str, kind: str) -> T:
    """The row `row_id` of `table` if `user_id` owns it; anyone else's (or none) is a 404."""
    row = session.get(table, row_id)
    if row is None or row.user_id != user_id:
        raise not_found(kind, row_id)
    return row


def gateway(request: Request) -> Gateway:
    """This API process's inference gateway (created in `api.main`'s lifespan)."""
    return request.app.state.gateway
