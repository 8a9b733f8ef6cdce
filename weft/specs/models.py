"""Specs of the model-onboarding workflows (document 004: add local model, add cloud model)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationInfo, field_validator, model_validator

from weft.paths import resolve_disk_uri
from weft.specs.base import Stage, StepDef, StepModel, WorkflowType, register, step_context
from weft.specs.names import WorkflowName
from weft.specs.scanning import SCAN_STAGES

Modality = Literal["llm", "mllm", "embedding", "text_to_speech", "speech_to_text", "image"]
HF_REPO = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$")


class Tag(StepModel):
    name: str = Field(min_length=1, max_length=64)
    color: str = Field(default="#000000", pattern=r"^#[0-9A-Fa-f]{6}$")


# --- add local model -------------------------------------------------------------------------


class LocalModality(StepModel):
    modality: Modality = "llm"


class LocalProvider(StepModel):
    provider_type: Literal["hugging_face", "url", "disk"]


class LocalDetails(StepModel):
    name: str = Field(min_length=1, max_length=200)
    uri: str = Field(min_length=1, max_length=2048)
    author: str | None = None
    description: str | None = None
    tags: list[Tag] = Field(default_factory=list)
    icon: str | None = None

    @model_validator(mode="after")
    def _uri_fits_provider(self, info: ValidationInfo):
        provider = getattr(self, "provider_type", None) or step_context(info).previous.get("provider_type")
        check_local_uri(provider, self.uri)
        return self


class LocalCredential(StepModel):
    proprietary_credential_id: str | None = None

    @field_validator("proprietary_credential_id")
    @classmethod
    def _credential_exists(cls, value: str | None, info: ValidationInfo):
        ctx = step_context(info)
        if value and ctx.session is not None:
            from weft.tables import Credential

            ctx.owned(Credential, value, "credential")
        return value


class AddLocalModelSpec(LocalCredential, LocalDetails, LocalProvider, LocalModality):
    """Everything the add_local_model flow needs: the four steps merged."""


def remove_onboarding_leftovers(workflow_id: str) -> None:
    """Compensation of a cancelled onboarding: drop its staged files and any model it registered."""
    from sqlmodel import select

    from weft.db import session_scope
    from weft.storage import get_storage
    from weft.tables import Model

    storage = get_storage()
    storage.delete(f"staging/{workflow_id}")
    with session_scope() as session:
        for model in session.exec(select(Model).where(Model.workflow_id == workflow_id)):
            storage.delete(f"models/{model.id}")
            session.delete(model)


def check_local_uri(provider: str | None, uri: str) -> None:
    if provider == "hugging_face" and not HF_REPO.match(uri):
        raise ValueError(f"'{uri}' is not a Hugging Face repo id (owner/name)")
    if provider == "url":
        parsed = urlparse(uri)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"'{uri}' is not an http(s) URL")
    if provider == "disk":
        resolve_disk_uri(uri)


ADD_LOCAL_MODEL = register(
    WorkflowType(
        name=WorkflowName.ADD_LOCAL_MODEL,
        title="Add local model",
        steps=(
            StepDef(1, "Select modality", LocalModality),
            StepDef(2, "Select provider type", LocalProvider),
            StepDef(3, "Add model details", LocalDetails),
            StepDef(4, "Select proprietary credential", LocalCredential),
        ),
        spec=AddLocalModelSpec,
        flow_name=WorkflowName.ADD_LOCAL_MODEL,
        stages=(
            Stage("validate_source", "Validate source"),
            Stage("fetch_model", "Fetch into registry storage"),
            Stage("extract_metadata", "Extract metadata"),
            Stage("estimate_hardware", "Estimate hardware"),
            Stage("register_model", "Register model"),
            *SCAN_STAGES,
        ),
        compensate=remove_onboarding_leftovers,
    )
)


# --- add cloud model -------------------------------------------------------------------------


class CloudProviderType(StepModel):
    provider_type: Literal["cloud_model"] = "cloud_model"


class CloudProvider(StepModel):
    provider_id: str

    @field_validator("provider_id")
    @classmethod
    def _provider_exists(cls, value: str, info: ValidationInfo):
        ctx = step_context(info)
        if ctx.session is not None:
            from weft.tables import Provider

            if ctx.session.get(Provider, value) is None:
                raise ValueError(f"provider {value} does not exist")
        return value


class CloudModelChoice(StepModel):
    cloud_model_id: str | None = None

    @model_validator(mode="after")
    def _cloud_model_exists(self, info: ValidationInfo):
        ctx = step_context(info)
        if self.cloud_model_id and ctx.session is not None:
            from weft.tables import CloudModel

            provider = getattr(self, "provider_id", None) or ctx.previous.get("provider_id")
            cm = ctx.session.get(CloudModel, self.cloud_model_id)
            if cm is None or (provider and cm.provider_id != provider):
                raise ValueError(f"cloud model {self.cloud_model_id} does not exist for provider {provider}")
        return self


class CloudDetails(StepModel):
    name: str = Field(min_length=1, max_length=200)
    modality: Modality = "llm"
    uri: str | None = Field(default=None, max_length=512)
    description: str | None = None
    tags: list[Tag] = Field(default_factory=list)
    icon: str | None = None

    @model_validator(mode="after")
    def _catalog_or_uri(self, info: ValidationInfo):
        chosen = getattr(self, "cloud_model_id", None)
        if chosen is None and not hasattr(self, "cloud_model_id"):
            chosen = step_context(info).previous.get("cloud_model_id")
        if not chosen and not self.uri:
            raise ValueError("uri is required when no cloud model is selected")
        return self


class AddCloudModelSpec(CloudDetails, CloudModelChoice, CloudProvider, CloudProviderType):
    """Everything the add_cloud_model flow needs: the four steps merged."""


ADD_CLOUD_MODEL = register(
    WorkflowType(
        name=WorkflowName.ADD_CLOUD_MODEL,
        title="Add cloud model",
        steps=(
            StepDef(1, "Select provider type", CloudProviderType),
            StepDef(2, "Select provider", CloudProvider),
            StepDef(3, "Select cloud model", CloudModelChoice),
            StepDef(4, "Add model details", CloudDetails),
        ),
        spec=AddCloudModelSpec,
        flow_name=WorkflowName.ADD_CLOUD_MODEL,
        stages=(
            Stage("resolve_cloud_model", "Resolve cloud model"),
            Stage("register_model", "Register model"),
        ),
        compensate=remove_onboarding_leftovers,
    )
)
