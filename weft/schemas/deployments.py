"""Deployments (documents 001 and 003): an endpoint seen as a deployment, document 003's adapter deploy,
document 001's versions, rollback, update and delete."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from weft.schemas.classic import ModelMetadata
from weft.schemas.common import UtcDatetime
from weft.schemas.endpoints import EndpointOut, EndpointUsage, VersionOut

PLATFORMS = ("weft", "local")  # weft's own replicas (`local`: document 004's name of a local deploy)
NAME_PATTERN = r"^[\w .:/-]+$"


class AdapterDeployConfig(BaseModel):
    """Document 003's deploy `config`."""

    model_config = ConfigDict(extra="forbid")

    instance_type: str | None = Field(default=None, description="the work pool or name of a registered cluster "
                                      "(GET /api/v1/clusters); unset: weft's gpu pool when a worker is online "
                                      "there, else cpu")
    min_replicas: int = Field(default=1, ge=0, le=64, description="0 scales to zero when idle (with auto_scaling)")
    max_replicas: int = Field(default=1, ge=1, le=64)
    auto_scaling: bool = Field(default=True, description="scale between min_replicas and max_replicas on the "
                               "requests in flight; false: a fixed max(min_replicas, 1) replicas")

    @field_validator("max_replicas")
    @classmethod
    def _not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and value < low:
            raise ValueError(f"max_replicas ({value}) must not be below min_replicas ({low})")
        return value


class AdapterDeploymentRequest(BaseModel):
    """Document 003's `POST /deployments` (a JSON body naming `adapter_id`): serve a fine-tuned adapter
    (its registered base + adapter model) on weft's replicas."""

    model_config = ConfigDict(extra="forbid")

    adapter_id: str = Field(min_length=1)
    platform: str = Field(default="weft", description=f"where it runs: one of {', '.join(PLATFORMS)} (weft's own "
                          "replicas); other platforms are not deployed to")
    config: AdapterDeployConfig = Field(default_factory=AdapterDeployConfig)
    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=NAME_PATTERN,
                             description="the endpoint's name (naming one of your endpoints adds a revision to "
                                         "it); unset: the adapter's name and id")

    @field_validator("platform")
    @classmethod
    def _weft(cls, value: str) -> str:
        if value.lower() not in PLATFORMS:
            raise ValueError(f"platform {value!r} is not available: weft deploys onto its own replicas; use one "
                             f"of {', '.join(PLATFORMS)}")
        return value.lower()


class DeploymentCreated(BaseModel):
    """Document 003's answer, with the workflow that deploys it."""

    deployment_id: str = Field(description="the endpoint's id (GET /api/v1/deployments/{id})")
    status: str = Field(description="deploying: the deploy workflow runs")
    endpoint: str | None = Field(description="the OpenAI-compatible base URL while the endpoint serves; null "
                                             "until it is ready")
    estimated_ready_time: UtcDatetime = Field(
        description="now + the median time the newest (up to 20) first deploys whose replicas ran on the same "
                    "work pool took from endpoint creation to their first traffic (measured from the endpoint "
                    "event log); with none measured on that pool, now + the replica start timeout "
                    "(WEFT_REPLICA_START_TIMEOUT_SECONDS), the latest the deploy waits. `estimate_basis` says which")
    estimate_basis: str
    adapter_id: str
    model_id: str = Field(description="the adapter's registered (base + adapter) model")
    name: str
    platform: str
    version: str = Field(description="the revision this deploy adds (v1 for a new endpoint)")
    workflow_id: str
    flow_run_id: str | None
    created_at: UtcDatetime


class DeploymentUsage(EndpointUsage):
    """The endpoint's usage of the last hour, with its cost."""

    cost_per_hour: float = Field(description="$ per hour over the last hour: the replica-hours its replicas ran "
                                             "in it, priced at their pool's WEFT_POOL_HOUR_COST rate (0 for a "
                                             "cloud proxy: its provider bills it)")


class DeploymentOut(EndpointOut):
    """A deployment in both documents' fields: document 003's (the endpoint, `running` when an LLM's is
    active, its URL while it serves) and document 001's (`model_metadata`, `configuration`,
    `metrics_summary`; a classic model's `endpoint_url` is its prediction URL, its statuses 001's)."""

    deployment_id: str
    endpoint: str | None
    adapter_id: str | None = Field(description="the adapter served, when the model is a fine-tuned adapter")
    platform: str = Field(description="weft (its own replicas) or a cloud proxy's provider")
    metrics: DeploymentUsage
    model_metadata: ModelMetadata = Field(description="document 001: the model's framework, type and shapes")
    configuration: dict[str, Any] = Field(description="document 001: memory_mb, timeout_seconds, min/max_instances")
    metrics_summary: dict[str, Any] = Field(description="document 001: total_predictions, avg_latency_ms, "
                                                        "error_rate over every recorded request")


class DeploymentList(BaseModel):
    """Document 001's page (`items`, `total`, `limit`, `offset`) and document 003's `deployments` (the
    same items), so clients of either read it."""

    items: list[DeploymentOut]
    deployments: list[DeploymentOut]
    total: int
    limit: int
    offset: int


class DeploymentDeleted(BaseModel):
    """Document 001's delete answer; `status` is `stopping` while replicas drain, then `stopped`."""

    message: str
    id: str
    status: str


class VersionList(BaseModel):
    versions: list[VersionOut]


class RollbackRequest(BaseModel):
    version: str = Field(pattern=r"^v\d+$", description="the revision to send all traffic to")


class DeploymentUpdate(BaseModel):
    """Document 001's update; `traffic` sets a split over versions (a canary, a promotion)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    memory_mb: int | None = Field(default=None, ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0, le=3600)
    min_instances: int | None = Field(default=None, ge=0, le=64)
    max_instances: int | None = Field(default=None, ge=1, le=64)
    traffic: dict[str, int] | None = Field(default=None, description='percent per version, e.g. {"v1": 90, "v2": 10}')


class DeploymentUpdated(BaseModel):
    id: str
    name: str
    status: str
    configuration: dict[str, Any]
    versions: list[VersionOut]
