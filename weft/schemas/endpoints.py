"""Endpoints and their workers (replicas), document 000's deploy call, and the deploy templates
(document 001/003's deployment schemas over them: weft/schemas/deployments.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from weft.schemas.common import UtcDatetime
from weft.serving.plan import AutoScaling, DeployConfig, Engine, Template


class DeployRequest(BaseModel):
    """Document 000's body; `instance_count` is the replica count, `deploy_config` document 004's. What
    weft cannot honour is a 422 naming the field, never ignored."""

    model_config = ConfigDict(extra="ignore")

    endpoint_type: Engine | None = Field(default=None, description="engine asked for; the answer says which runs")
    quantization: str | None = Field(default=None, description="only 'none': weft serves the weights as stored")
    instance_type: str | None = Field(default=None, description="a registered cluster's work pool (or name)")
    instance_count: int | None = Field(default=None, ge=1, le=64)
    endpoint_name: str | None = Field(default=None, min_length=1, max_length=100,
                                      description="a new endpoint's name, or one of yours: the deploy adds a revision")
    endpoint_id: str | None = Field(default=None, description="one of your endpoints: the deploy adds a revision "
                                                              "to it (instead of endpoint_name)")
    template_id: str | None = None
    deploy_config: DeployConfig | None = None
    auto_scaling: AutoScaling | None = None
    traffic_percent: int | None = Field(default=None, ge=1, le=100,
                                        description="onto an existing endpoint: the new revision's share (a canary)")
    cluster_id: str | None = None

    @field_validator("quantization")
    @classmethod
    def _as_stored(cls, value: str | None) -> None:
        if value not in (None, "none"):
            raise ValueError(f"{value!r} is not supported: weft serves a model's weights as they are stored "
                             "(register a quantized model to serve one)")
        return None


class DeployOut(BaseModel):
    id: str = Field(description="the endpoint (GET /endpoints/{id}); also the deployment id")
    model_id: str
    name: str
    endpoint_type: str | None = Field(description="the engine the replicas will run (vllm | transformers) or the "
                                                  "cloud provider")
    endpoint_url: str = Field(description="the OpenAI-compatible base URL; `model` is the endpoint's slug")
    model: str
    version: str | None = Field(default=None, description="the revision this deploy adds (v1 for a new endpoint)")
    status: str
    workflow_id: str
    flow_run_id: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class WorkerOut(BaseModel):
    """One replica: a serve_replica flow run."""

    id: str
    revision_id: str | None
    state: str = Field(description="starting | healthy | unresponsive | unhealthy | draining | stopped")
    url: str | None
    engine: str | None
    flow_run_id: str | None
    max_concurrency: int
    last_seen: UtcDatetime | None
    reason: str | None
    created_at: UtcDatetime


class EndpointUsage(BaseModel):
    """Measured from the gateway's records of the last hour."""

    requests_last_hour: int
    requests_per_minute: float
    avg_latency_ms: float | None
    success_rate: float | None


class VersionOut(BaseModel):
    """Document 001's version, with its traffic share and replicas."""

    version: str
    id: str
    created_at: UtcDatetime
    status: str = Field(description="deploying | active | inactive | failed")
    is_current: bool
    changes: str | None
    model_id: str
    engine: str | None
    traffic_percent: int
    desired_replicas: int
    healthy_replicas: int


class EventOut(BaseModel):
    """One controller action or desired-state change, with its reason."""

    id: int
    version: str | None
    action: str
    reason: str
    replica_id: str | None
    created_at: UtcDatetime


class EndpointOut(BaseModel):
    id: str
    name: str
    slug: str | None = Field(description="URL-safe name: the OpenAI `model` and /endpoints/{slug}/v1")
    model_id: str
    status: str = Field(description="pending | deploying | active | updating | stopping | failed | stopped")
    kind: str = Field(description="replicas | proxy")
    endpoint_type: str | None = Field(description="the engine (vllm | transformers) or the provider")
    engine: str | None = Field(description="the engine its healthy replicas really run (the planned one while none does)")
    max_batch: int | None = Field(description="sequences one replica decodes together, as its replicas report it")
    pool: str | None
    endpoint_url: str
    model: str
    deploy_config: dict[str, Any]
    min_instances: int
    max_instances: int
    target_concurrency: int
    timeout_seconds: float
    versions: list[VersionOut]
    events: list[EventOut] = Field(description="newest first")
    plan: dict[str, Any]
    workflow_id: str | None
    reason: str | None
    workers: list[WorkerOut]
    metrics: EndpointUsage
    created_at: UtcDatetime
    updated_at: UtcDatetime


class EndpointList(BaseModel):
    data: list[EndpointOut]
    total: int


class TemplateList(BaseModel):
    data: list[Template]
