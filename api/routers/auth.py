"""Users, tokens and API keys (documents 001 and 000)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Listing, Paging, paginate
from api.security import hash_api_key, hash_password, new_api_key, verify_password
from weft.schemas.auth import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    LoginIn,
    MeOut,
    RegisterIn,
    RegisterOut,
    TokenIn,
    TokenOut,
    UserOut,
)
from weft.schemas.common import Page
from weft.statuses import EndpointStatus
from weft.tables import ApiKey, Endpoint, InferenceRecord, Model, User, Workflow
from weft.tokens import create_access_token

router = APIRouter(prefix="/auth", tags=["auth"])


def conflict(field: str) -> ApiError:
    return ApiError(409, "CONFLICT", f"{field} is already registered", {"field": field})


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=RegisterOut)
def register(body: RegisterIn, session: SessionDep) -> RegisterOut:
    """Create a user and return a token for it; a taken email or username is 409."""
    email = body.email.lower()
    taken = session.exec(select(User).where(or_(User.email == email, User.username == body.username))).first()
    if taken:
        raise conflict("email" if taken.email == email else "username")
    user = User(email=email, username=body.username, full_name=body.full_name,
                password_hash=hash_password(body.password))
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent registration won the race
        session.rollback()
        raise conflict("email or username") from exc
    token, expires = create_access_token(user.id)
    return RegisterOut(access_token=token, expires_in=expires, user=UserOut.model_validate(user))


def authenticate(session: Session, login: str, password: str) -> User:
    """The user whose email or username is `login` and whose password matches; 401 otherwise."""
    user = session.exec(select(User).where(or_(User.email == login.lower(), User.username == login))).first()
    if user is None or not verify_password(password, user.password_hash):
        raise ApiError(401, "UNAUTHORIZED", "wrong email/username or password")
    return user


@router.post("/login", response_model=TokenOut)
def login(body: LoginIn, session: SessionDep) -> TokenOut:
    token, expires = create_access_token(authenticate(session, body.email, body.password).id)
    return TokenOut(access_token=token, expires_in=expires)


@router.post("/token", response_model=TokenOut)
def token(body: TokenIn, session: SessionDep) -> TokenOut:
    """An access token for an email or username and password (document 000)."""
    token, expires = create_access_token(authenticate(session, body.username, body.password).id)
    return TokenOut(access_token=token, expires_in=expires)


@router.get("/me", response_model=MeOut)
def me(user: CurrentUser, session: SessionDep) -> MeOut:
    """The caller, with how many models, workflows and deployments they own and the predictions served."""
    def count(table: type[Model] | type[Workflow] | type[Endpoint], *where) -> int:
        return session.exec(select(func.count()).select_from(table).where(table.user_id == user.id, *where)).one()

    predictions = session.exec(select(func.count()).select_from(InferenceRecord).join(
        Endpoint, col(Endpoint.id) == col(InferenceRecord.endpoint_id)).where(Endpoint.user_id == user.id)).one()
    return MeOut(id=user.id, email=user.email, username=user.username, full_name=user.full_name,
                 created_at=user.created_at, model_count=count(Model), workflow_count=count(Workflow),
                 deployment_count=count(Endpoint, Endpoint.status != EndpointStatus.STOPPED),
                 total_predictions=predictions)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyIn, user: CurrentUser, session: SessionDep) -> ApiKeyCreated:
    """A new key, returned this once; only its sha256 is stored."""
    key = new_api_key()
    row = ApiKey(user_id=user.id, name=body.name, key_hash=hash_api_key(key), expires_at=body.expires_at)
    session.add(row)
    session.commit()
    return ApiKeyCreated(id=row.id, name=row.name, key=key, created_at=row.created_at, expires_at=row.expires_at)


@router.get("/api-keys", response_model=Page[ApiKeyOut])
def list_api_keys(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing) -> dict:
    """The caller's keys, without their values."""
    stmt = select(ApiKey).where(ApiKey.user_id == user.id).order_by(col(ApiKey.created_at), col(ApiKey.id))
    return paginate(session, stmt, page, ApiKeyOut.model_validate, listing, ApiKeyOut)


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_api_key(key_id: str, user: CurrentUser, session: SessionDep) -> None:
    """Revoke a key: requests with it are 401 from now on."""
    row = get_owned(session, ApiKey, key_id, user.id, "api key")
    session.delete(row)
    session.commit()
