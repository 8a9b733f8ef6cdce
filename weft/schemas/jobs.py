"""Training jobs (document 003: a job is a fine_tune workflow, job id = workflow id) and adapters."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime
from weft.schemas.workflows import documented_as


class LogLine(BaseModel):
    timestamp: str
    level: str
    message: str
    source: str


class LogEvent(BaseModel):
    """One event of `GET /jobs/{id}/logs` as a stream (`Accept: text/event-stream`): `id` is the line's
    1-based position in the run's log (send it back as Last-Event-ID to resume after it), `text` is
    `[HH:MM:SS] [LEVEL] message`."""

    id: int
    text: str


class JobCreate(BaseModel):
    config: dict[str, Any] = Field(description="base_model (id, name or uri), dataset_id or dataset_path, algorithm "
                                               "(lora | qlora | dora), rank, alpha, learning_rate, ...")


# the body of POST /jobs: checked by the handler, so a wrong one is document 003's 400 INVALID_CONFIG
JobCreateBody = documented_as(JobCreate, "JobCreateBody", "A document-003 job config.")


class JobCreated(BaseModel):
    job_id: str
    status: str
    created_at: UtcDatetime
    estimated_duration_minutes: float | None
    estimated_cost: float | None = Field(description="estimated duration x the resource's hourly rate (USD); "
                                                     "null where the resource has no price")
    provider: str | None = Field(description="the platform it runs on")
    resource_id: str | None = Field(description="the resource it runs on (its pool's, for local runs)")
    flow_run_id: str | None


class Artifact(BaseModel):
    path: str
    size_bytes: int
    hash: str = Field(description="sha256:<hex>")


class JobOut(BaseModel):
    job_id: str
    config: dict[str, Any] = Field(description="base_model, dataset_id, name and the training config")
    status: str = Field(description="pending | running | completed | failed | cancelled")
    created_at: UtcDatetime
    flow_run_id: str | None
    progress: float = Field(description="0..1, from the run's progress artifact")
    metrics: dict[str, Any]
    reason: str | None
    model_id: str | None = Field(description="the fine-tuned model, once registered")
    adapter_id: str | None
    artifact: Artifact | None = Field(default=None, description="the adapter's file (job details only)")
    duration_seconds: float | None = Field(default=None, description="measured run time of the finished run "
                                                                     "(job details only)")
    cost: float | None = Field(default=None, description="duration x the resource's hourly rate at submission, "
                                                         "rounded up to its billing increment (job details only)")


class JobList(BaseModel):
    """Document 003's list, one page of it: `total` counts every matching job."""

    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


class JobCancelled(BaseModel):
    success: bool
    job_id: str
    status: str


class JobLogs(BaseModel):
    job_id: str
    logs: list[LogLine]
    count: int


class LogPush(BaseModel):
    level: str = Field(default="info", pattern="^(?i)(debug|info|warn|warning|error|critical)$")
    message: str = Field(min_length=1, max_length=10_000)
    source: str = Field(default="kernel", pattern=r"^[\w.-]{1,50}$")


class LogPushed(BaseModel):
    job_id: str
    level: str
    message: str
    source: str
