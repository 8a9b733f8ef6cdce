"""Users, tokens and API keys (documents 001 and 000)."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import func, or_
from sqlmodel import select

from api.deps import CurrentUser, SessionDep
from api.errors import ApiError, not_found
from api.paging import Paging, paginate
from api.schemas import (ApiKeyCreated, ApiKeyIn, ApiKeyOut, LoginIn, MeOut, RegisterIn, RegisterOut, TokenIn,
                         TokenOut, UserOut)
from api.security import create_access_token, hash_api_key, hash_password, new_api_key, verify_password
from weft.tables import ApiKey, Model, User, Workflow

router = APIRouter(prefix="/auth", tags=["auth"])


def bad_credentials() -> ApiError:
    return ApiError(401, "UNAUTHORIZED", "wrong email/username or password")


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=RegisterOut)
def register(body: RegisterIn, session: SessionDep) -> RegisterOut:
    taken = session.exec(select(User).where(or_(User.email == body.email.lower(), User.username == body.username))).first()
    if taken:
        field = "email" if taken.email == body.email.lower() else "username"
        raise ApiError(409, "CONFLICT", f"{field} is already registered", {"field": field})
    user = User(email=body.email.lower(), username=body.username, full_name=body.full_name,
                password_hash=hash_password(body.password))
    session.add(user)
    session.commit()
    token, expires = create_access_token(user.id)
    return RegisterOut(access_token=token, expires_in=expires, user=UserOut.model_validate(user, from_attributes=True))


def authenticate(session, login: str, password: str) -> User:
    user = session.exec(select(User).where(or_(User.email == login.lower(), User.username == login))).first()
    if user is None or not verify_password(password, user.password_hash):
        raise bad_credentials()
    return user


@router.post("/login", response_model=TokenOut)
def login(body: LoginIn, session: SessionDep) -> TokenOut:
    token, expires = create_access_token(authenticate(session, body.email, body.password).id)
    return TokenOut(access_token=token, expires_in=expires)


@router.post("/token", response_model=TokenOut)
def token(body: TokenIn, session: SessionDep) -> TokenOut:
    token, expires = create_access_token(authenticate(session, body.username, body.password).id)
    return TokenOut(access_token=token, expires_in=expires)


@router.get("/me", response_model=MeOut)
def me(user: CurrentUser, session: SessionDep) -> MeOut:
    count = lambda table: session.exec(select(func.count()).select_from(table).where(table.user_id == user.id)).one()  # noqa: E731
    return MeOut(id=user.id, email=user.email, username=user.username, full_name=user.full_name,
                 created_at=user.created_at, model_count=count(Model), workflow_count=count(Workflow))


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyIn, user: CurrentUser, session: SessionDep) -> ApiKeyCreated:
    key = new_api_key()
    row = ApiKey(user_id=user.id, name=body.name, key_hash=hash_api_key(key), expires_at=body.expires_at)
    session.add(row)
    session.commit()
    return ApiKeyCreated(id=row.id, name=row.name, key=key, created_at=row.created_at, expires_at=row.expires_at)


@router.get("/api-keys")
def list_api_keys(user: CurrentUser, session: SessionDep, page: Paging) -> dict:
    stmt = select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at)
    return paginate(session, stmt, page, lambda r: ApiKeyOut.model_validate(r, from_attributes=True).model_dump(mode="json"))


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_api_key(key_id: str, user: CurrentUser, session: SessionDep) -> None:
    row = session.get(ApiKey, key_id)
    if row is None or row.user_id != user.id:
        raise not_found("api key", key_id)
    session.delete(row)
    session.commit()
