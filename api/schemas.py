"""Request and response models of the REST resources (documents 000 and 001)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, field_validator


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class Out(BaseModel):
    """A response model read from a table row."""

    model_config = ConfigDict(from_attributes=True)


# --- auth -------------------------------------------------------------------------------------------

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
        if value <= datetime.now(timezone.utc):
            raise ValueError("expires_at must be in the future")
        return value


class ApiKeyOut(Out):
    id: str
    name: str
    created_at: UtcDatetime
    expires_at: UtcDatetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="shown only once; weft keeps only its hash")


# --- credentials and the provider catalog -------------------------------------------------------------

class CredentialIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    provider_type: str = Field(min_length=1, max_length=50, pattern=r"^[a-z0-9_\-]+$",
                               description="e.g. hugging_face, openai")
    secret: str = Field(min_length=1, max_length=10_000, description="stored in a Prefect Secret block, never echoed")


class CredentialOut(Out):
    id: str
    name: str
    provider_type: str
    created_at: UtcDatetime


class ProviderOut(Out):
    id: str
    name: str
    provider_type: str
    description: str | None
    base_url: str | None
    icon: str | None


class CloudModelOut(Out):
    id: str
    provider_id: str
    name: str
    uri: str
    modality: str
    context_length: int | None
    description: str | None


# --- models -------------------------------------------------------------------------------------------

class ModelSummary(Out):
    id: str
    name: str
    description: str | None
    base_model: str | None
    type: str
    specialization: str | None
    status: str
    modality: str
    provider_type: str
    uri: str | None
    tags: list[dict[str, Any]]
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ModelOut(ModelSummary):
    author: str | None
    icon: str | None
    provider_id: str | None
    cloud_model_id: str | None
    metrics: dict[str, Any]
    parameters: dict[str, Any]
    details: dict[str, Any] = Field(description="the metadata extracted when the model was added")
    hardware: dict[str, Any]
    storage_uri: str | None
    workflow_id: str | None
    deployments: list[dict[str, Any]] = Field(default_factory=list)
    scan: dict[str, Any] | None = Field(default=None, description="the last security scan (see /security-scan)")
    scan_verified: bool = False
    scan_override: dict[str, Any] | None = None


class ScanOverrideIn(BaseModel):
    reason: str = Field(min_length=5, max_length=1000, description="why this model may be deployed anyway")
