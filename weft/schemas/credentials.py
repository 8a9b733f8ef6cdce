"""Proprietary credentials (the secret itself lives in a Prefect Secret block)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from weft.schemas.common import Out, UtcDatetime


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
