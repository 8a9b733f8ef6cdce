"""Adapters (document 003): trained by fine-tune jobs or uploaded."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.schemas.common import PageMeta, UtcDatetime


class AdapterParams(BaseModel):
    rank: int | None
    alpha: float | None
    target_modules: list[str]


class AdapterOut(BaseModel):
    """Document 003's adapter item, with weft's lineage fields."""

    id: str
    job_id: str | None = Field(description="the fine-tune job that trained it; null when uploaded")
    name: str
    base_model: str = Field(description="the base model's name")
    base_model_id: str
    algorithm: str = Field(description="lora | qlora | dora")
    path: str = Field(description="its folder in object storage")
    size_bytes: int
    created_at: UtcDatetime
    metadata: AdapterParams
    model_id: str | None = Field(description="the fine-tuned model (base + adapter) registered with it")
    dataset_id: str | None
    dataset_fingerprint: str | None
    metrics: dict[str, Any]
    sha256: str | None


class AdapterList(BaseModel):
    """Document 003's `{adapters}` and document 000's `{data, meta}` at once."""

    adapters: list[AdapterOut]
    data: list[AdapterOut]
    meta: PageMeta


class AdapterUploaded(BaseModel):
    """Document 003's upload answer, plus the records it created."""

    adapter_id: str
    model_id: str = Field(description="the fine-tuned model to deploy or evaluate")
    registry_url: str | None = Field(description="a hub URL once pushed to one; weft does not push uploads")
    success: bool
    message: str
    path: str
    trainable_parameters: int
