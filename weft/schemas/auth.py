"""Users, tokens and API keys (documents 000 and 001)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, EmailStr, Field, field_validator

from weft.clock import as_utc, utcnow
from weft.schemas.common import Out, UtcDatetime


class RegisterIn(BaseModel):
    email: EmailStr
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=8, max_length=128)
    full_name: str | None = Field(default=None, max_length=200)


class LoginIn(BaseModel):
    email: EmailStr
    password: str


class TokenIn(BaseModel):
    username: str = Field(description="email or username")
    password: str


class UserOut(Out):
    id: str
    email: str
    username: str
    created_at: UtcDatetime


class MeOut(UserOut):
    full_name: str | None
    model_count: int = Field(description="models the user owns")
    workflow_count: int = Field(description="workflows the user started")
    deployment_count: int = Field(description="deployments (LLM and classic) the user has, deleted ones aside")
    total_predictions: int = Field(description="requests the gateway recorded on the user's deployments")


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int | None = Field(default=None, description="seconds until the token expires")


class RegisterOut(TokenOut):
    user: UserOut


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_at: datetime | None = Field(default=None, description="ISO 8601; no expiry when absent")

    @field_validator("expires_at")
    @classmethod
    def in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        if value <= utcnow():
            raise ValueError("expires_at must be in the future")
        return value


class ApiKeyOut(Out):
    id: str
    name: str
    created_at: UtcDatetime
    expires_at: UtcDatetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="shown only once; weft keeps only its hash")
