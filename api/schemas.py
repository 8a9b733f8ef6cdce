"""Request and response models of the REST resources (documents 000 and 001)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, EmailStr, Field


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


class UserOut(BaseModel):
    id: str
    email: str
    username: str
    created_at: datetime


class MeOut(UserOut):
    full_name: str | None
    model_count: int
    workflow_count: int


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int | None = None


class RegisterOut(TokenOut):
    user: UserOut


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_at: datetime | None = None


class ApiKeyOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    expires_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="shown only once")


class CredentialIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    provider_type: str = Field(min_length=1, max_length=50, description="e.g. hugging_face, openai")
    secret: str = Field(min_length=1, max_length=10_000)


class CredentialOut(BaseModel):
    id: str
    name: str
    provider_type: str
    created_at: datetime


class ModelSummary(BaseModel):
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
    created_at: datetime
    updated_at: datetime


class ModelOut(ModelSummary):
    author: str | None
    icon: str | None
    provider_id: str | None
    cloud_model_id: str | None
    metrics: dict[str, Any]
    parameters: dict[str, Any]
    details: dict[str, Any]
    hardware: dict[str, Any]
    storage_uri: str | None
    workflow_id: str | None
    deployments: list[dict[str, Any]] = []
