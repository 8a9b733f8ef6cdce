"""The model registry (documents 000 and 002) and its security scans."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.scan.checks import Issue
from weft.schemas.common import Out, PageMeta, UtcDatetime


class Tag(BaseModel):
    name: str
    color: str | None = Field(default=None, description="e.g. #000000")


class ScanOverrideIn(BaseModel):
    reason: str = Field(min_length=5, max_length=1000, description="why this model may be deployed anyway")


class ScanOverride(BaseModel):
    """Who allowed deploying a model whose scan is not SAFE, and why."""

    user_id: str
    username: str | None = None
    reason: str
    scan_status: str | None = Field(default=None, description="the scan status that was overridden")
    at: UtcDatetime


class ScanReport(BaseModel):
    """The last security scan as the scan flow stores it."""

    status: str = Field(description="SAFE | LOW | MEDIUM | HIGH | CRITICAL")
    total_issues: int
    total_scanned: int = 0
    total_issues_by_severity: dict[str, int] = Field(default_factory=dict, description="count by LOW..CRITICAL")
    scanned_files: list[str] = Field(default_factory=list)
    total_skipped_files: int = 0
    model_issues: list[Issue] = Field(default_factory=list, description="the findings, worst first")
    file_hashes: dict[str, str] = Field(default_factory=dict, description="sha256 of each scanned file")


class SecurityScanOut(ScanReport):
    """`GET /models/{id}/security-scan`: the scan with the model's deploy gate."""

    model_id: str
    scan_verified: bool = Field(description="the scan status is SAFE")
    scan_override: ScanOverride | None


class ModelDeployment(BaseModel):
    """One deployment of a model (document 000's `deployments[]`)."""

    id: str
    endpoint_type: str
    status: str
    created_at: UtcDatetime


class ModelSummary(Out):
    id: str
    ID: str = Field(description="the id again, as document 002 spells it")
    name: str
    description: str | None
    base_model: str | None
    type: str = Field(description="base | fine-tuned | cloud")
    specialization: str | None
    status: str
    modality: str
    provider_type: str
    uri: str | None
    tags: list[Tag]
    job_id: str | None = Field(default=None, description="the fine-tune job that produced it (document 002)")
    storage_path: str | None = Field(default=None, description="the model's own storage key")
    lora_adapters_path: str | None = Field(default=None, description="storage key of its peft adapter folder")
    gguf_path: str | None = Field(default=None, description="storage key of its GGUF export folder")
    merged_path: str | None = Field(default=None, description="storage key of its merged safetensors export")
    training_metrics: dict[str, Any] = Field(default_factory=dict)
    total_size: int = Field(default=0, description="bytes")
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
    deployments: list[ModelDeployment] = Field(default_factory=list)
    scan: ScanReport | None = Field(default=None, description="the last security scan (see /security-scan)")
    scan_verified: bool = False
    scan_override: ScanOverride | None = None


class ModelPage(BaseModel):
    """`GET /models`: document 000's `{data, meta}` and document 002's `{data, total, page, limit}` at once."""

    data: list[ModelSummary]
    meta: PageMeta
    total: int
    page: int
    limit: int


class ModelJob(BaseModel):
    id: str
    ID: str
    dataset_id: str | None
    status: str
    configuration: dict[str, Any]


class ModelRecord(ModelOut):
    """Document 002's model record: document 000's fields plus lineage, files and evaluation results."""

    job: ModelJob | None = None
    files: dict[str, int] = Field(default_factory=dict, description="`<folder>/<file>` → bytes, as in the ZIP")
    eval_results: dict[str, Any] = Field(default_factory=dict, description="the latest evaluation's fine-tuned scores")


class ModelDetail(ModelRecord):
    """`GET /models/{id}`: the record flat (document 000) and under `model` (document 002), with download links
    that need no token and expire after 24 h."""

    model: ModelRecord
    download_links: dict[str, str] = Field(description="per artifact folder (lora_adapters, gguf, merged, model)")
    file_links: dict[str, str] = Field(description="per file, `<folder>/<file>` → URL")


class ModelDeleted(BaseModel):
    message: str
    id: str
    removed: list[str] = Field(description="the storage keys deleted with it")


class ExportStarted(BaseModel):
    workflow_id: str
    status: str
    model_id: str
    format: str
    quantization: str | None
    warning: str | None = Field(description="set when the quantization measurably degrades small models")
    flow_run_id: str | None
    message: str


class HardwareRequirements(BaseModel):
    min_vram_gb: float | None = Field(description="to serve it in int4 (weft.hardware)")
    recommended_vram_gb: float | None = Field(description="to fine-tune it with LoRA in fp16 (weft.hardware)")


class ModelFacts(BaseModel):
    """`GET /models/{source}/{model_id}` (document 003)."""

    id: str
    name: str
    source: str
    description: str | None
    size_gb: float | None
    license: str | None
    architecture: str | None
    context_length: int | None
    parameter_count: int | None
    hardware_requirements: HardwareRequirements
    compatible_algorithms: list[str] = Field(description="qlora only where bitsandbytes can run")
