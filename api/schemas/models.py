"""The model registry (documents 000 and 002) and its security scans."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from api.schemas.common import Out, UtcDatetime
from weft.scan.checks import Issue


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
