"""Request dependencies: the database session and the authenticated user."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session, select

from api.errors import ApiError
from api.security import decode_access_token, hash_api_key
from weft.db import get_engine
from weft.tables import ApiKey, User


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request, session: SessionDep) -> User:
    """The user of `Authorization: Bearer <JWT>` or `X-API-Key: <key>`; 401 otherwise."""
    if key := request.headers.get("x-api-key"):
        api_key = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))).first()
        if api_key is None:
            raise unauthorized("invalid API key")
        expires = api_key.expires_at
        if expires and (expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)) < datetime.now(timezone.utc):
            raise unauthorized("API key expired")
        user = session.get(User, api_key.user_id)
    else:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("missing credentials: send Authorization: Bearer <token> or X-API-Key")
        user_id = decode_access_token(token)
        user = session.get(User, user_id) if user_id else None
        if user_id is None:
            raise unauthorized("invalid or expired token")
    if user is None:
        raise unauthorized("unknown user")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
