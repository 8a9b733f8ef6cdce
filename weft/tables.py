"""SQLModel tables: the domain records (run state, logs and progress live in Prefect)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from weft.clock import utcnow
from weft.ids import new_id
from weft.statuses import (
    AlertStatus,
    ClusterStatus,
    DatasetStatus,
    DeliveryStatus,
    EndpointStatus,
    ModelStatus,
    PlatformStatus,
    ReplicaState,
    RevisionStatus,
    RunStatus,
    WorkflowStatus,
)


class User(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    email: str = Field(index=True, unique=True)
    username: str = Field(index=True, unique=True)
    full_name: str | None = None
    password_hash: str
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: str = Field(default_factory=lambda: f"apk_{uuid.uuid4().hex[:16]}", primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    name: str
    key_hash: str = Field(index=True, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None


class Credential(SQLModel, table=True):
    """A proprietary credential; the secret itself is a Prefect Secret block named `block_name`."""

    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    name: str
    provider_type: str
    block_name: str
    created_at: datetime = Field(default_factory=utcnow)


class Provider(SQLModel, table=True):
    """A seeded cloud provider of the catalog (weft/catalog/providers.yaml)."""

    id: str = Field(primary_key=True)
    name: str
    provider_type: str = "cloud_model"
    description: str | None = None
    base_url: str | None = None
    icon: str | None = None


class CloudModel(SQLModel, table=True):
    __tablename__ = "cloud_model"
    id: str = Field(primary_key=True)
    provider_id: str = Field(foreign_key="provider.id", index=True)
    name: str
    uri: str
    modality: str = "llm"
    context_length: int | None = None
    description: str | None = None


class Workflow(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    workflow_type: str = Field(index=True)
    name: str | None = None  # set by document 000's POST /workflows; step workflows take it from their data
    description: str | None = None
    status: str = WorkflowStatus.PENDING
    total_steps: int
    current_step: int = 0
    flow_run_id: str | None = None
    reason: str | None = None
    run_count: int = 0
    cache_version: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class WorkflowStep(SQLModel, table=True):
    __tablename__ = "workflow_step"
    __table_args__ = (UniqueConstraint("workflow_id", "step_number"),)
    id: int | None = Field(default=None, primary_key=True)
    workflow_id: str = Field(foreign_key="workflow.id", index=True)
    step_number: int
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Model(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    workflow_id: str | None = Field(default=None, index=True)
    name: str
    description: str | None = None
    type: str = "base"  # base | fine-tuned | cloud
    modality: str = "llm"
    provider_type: str
    provider_id: str | None = None
    cloud_model_id: str | None = None
    uri: str | None = None
    author: str | None = None
    icon: str | None = None
    base_model: str | None = None
    specialization: str | None = None
    status: str = ModelStatus.ACTIVE
    storage_uri: str | None = None
    tags: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    hardware: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    parameters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    scan: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    scan_verified: bool = False  # the last security scan's status is SAFE
    scan_override: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True),
                                                 description="{user_id, reason, at}: deploy despite the scan")
    promoted: bool = Field(default=False, description="an evaluation's promotion gate passed")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Dataset(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    name: str
    description: str | None = None
    file_name: str
    file_type: str  # jsonl | json | csv | parquet
    storage_key: str
    size_bytes: int = 0
    fingerprint: str | None = Field(default=None, index=True, description="sha256 of the bytes")
    record_count: int | None = None
    status: str = DatasetStatus.PROCESSING
    error: str | None = None
    analysis: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    analysis_workflow_id: str | None = None
    splits: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Adapter(SQLModel, table=True):
    """A trained peft adapter and its lineage (base model, dataset, config, metrics)."""

    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    name: str
    base_model_id: str = Field(index=True)
    dataset_id: str | None = Field(default=None, index=True)
    dataset_fingerprint: str | None = None
    model_id: str | None = Field(default=None, description="the fine-tuned model registered with it")
    workflow_id: str | None = Field(default=None, index=True)
    method: str
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    storage_key: str
    size_bytes: int = 0
    sha256: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Evaluation(SQLModel, table=True):
    """A base-vs-fine-tuned comparison (document 002). Its id is the evaluate_model workflow's id."""

    id: str = Field(primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    model_id: str = Field(index=True)
    base_model_id: str | None = None
    dataset_id: str | None = None
    test_set_path: str | None = None
    base_model_name: str | None = None
    fine_tuned_name: str | None = None
    status: str = RunStatus.PENDING
    results: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    examples: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    benchmarks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    gate: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    promoted: bool = False
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Endpoint(SQLModel, table=True):
    """A deployed model: the desired state the endpoint controller makes true (revisions, their traffic
    split and replica bounds), or a proxy to a cloud provider. Its `slug` is the `model` of
    /v1/completions and the `{slug}` of /endpoints/{slug}/v1; its id is also the deployment id."""

    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    model_id: str = Field(index=True)  # the model of the revision with the most traffic
    name: str = Field(unique=True)
    slug: str | None = Field(default=None, unique=True)
    status: str = EndpointStatus.PENDING
    kind: str = "replicas"  # replicas | proxy
    workflow_id: str | None = None
    pool: str | None = None
    engine: str | None = None  # vllm | transformers (replicas); the provider (proxy)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    plan: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    min_instances: int = 1  # per revision with traffic; 0 scales to zero when idle
    max_instances: int = 1
    target_concurrency: int = 1  # in-flight requests per replica the autoscaler aims at
    timeout_seconds: float = 60.0  # how long a request may wait for a replica (cold start)
    memory_mb: int | None = None
    proxy_url: str | None = None
    proxy_model: str | None = None
    credential_id: str | None = None
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Revision(SQLModel, table=True):
    """What an endpoint's replicas run (`v1`, `v2`, ...): a model (or base + adapter) on an engine and pool
    with its plan, the share of traffic it gets, and how many replicas the autoscaler wants for it."""

    __table_args__ = (UniqueConstraint("endpoint_id", "number"),)
    id: str = Field(default_factory=new_id, primary_key=True)
    endpoint_id: str = Field(index=True)
    number: int
    model_id: str
    workflow_id: str | None = Field(default=None, unique=True)
    engine: str | None = None
    pool: str | None = None
    plan: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = RevisionStatus.DEPLOYING
    changes: str | None = None
    traffic: int = 0  # percent of the endpoint's requests
    traffic_changed_at: datetime = Field(default_factory=utcnow)
    replicas: int = 0  # desired replicas while it has traffic (or is deploying)
    scaled_at: datetime = Field(default_factory=utcnow)  # when `replicas` last changed
    demand_at: datetime | None = None  # a request waited for a replica (scale from zero)
    failures: int = 0  # replicas in a row that failed before serving
    next_start_at: datetime | None = None  # back-off after failures
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def version(self) -> str:
        return f"v{self.number}"


class EndpointEvent(SQLModel, table=True):
    """One action of the endpoint controller or one lifecycle change, with its reason."""

    __tablename__ = "endpoint_event"
    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: str = Field(index=True)
    version: str | None = None
    action: str
    reason: str
    replica_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ControllerLease(SQLModel, table=True):
    """Who runs the endpoint controller: the holder renews the lease; another copy waits until it lapses
    (or, on the same host, until the holder's process is gone)."""

    __tablename__ = "controller_lease"
    name: str = Field(primary_key=True)
    holder: str
    host: str
    pid: int
    expires_at: datetime


class Replica(SQLModel, table=True):
    """One serving process of a revision: a serve_replica flow run that heartbeats while healthy."""

    id: str = Field(default_factory=new_id, primary_key=True)
    endpoint_id: str = Field(index=True)
    revision_id: str | None = Field(default=None, index=True)
    flow_run_id: str | None = Field(default=None, index=True)
    url: str | None = None
    state: str = ReplicaState.STARTING
    engine: str | None = None
    max_concurrency: int = 1
    cold_start: bool = False  # started because a request was waiting on an endpoint scaled to zero
    last_seen: datetime | None = None
    stop_at: datetime | None = None  # draining: out of rotation, stopped at this time
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class HostedAdapter(SQLModel, table=True):
    """An adapter revision served by a replica of its base model (loaded at run time under `name`), so an
    adapter endpoint needs no copy of the base of its own while such a replica runs."""

    __tablename__ = "hosted_adapter"
    replica_id: str = Field(primary_key=True)
    revision_id: str = Field(primary_key=True, index=True)
    name: str  # the `model` the replica answers to for it
    created_at: datetime = Field(default_factory=utcnow)


class InferenceRecord(SQLModel, table=True):
    """One request through the gateway (for metrics and drift monitoring)."""

    __tablename__ = "inference_record"
    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: str | None = Field(default=None, index=True)
    replica_id: str | None = None
    revision_id: str | None = None
    user_id: str | None = None
    route: str
    latency_ms: float
    tokens_in: int = 0
    tokens_out: int = 0
    status_code: int
    error: str | None = None
    prompt: str | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)


class RateLimitWindow(SQLModel, table=True):
    """Requests of one identity in one fixed rate-limit window, counted alike by every API process.
    The window comes first in the key, so dropping old windows is a range of the primary key."""

    __tablename__ = "rate_limit_window"
    window_number: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})  # unix time // 60
    identity: str = Field(primary_key=True)
    hits: int = 0


class Cluster(SQLModel, table=True):
    """A Prefect work pool weft deploys onto, with its configuration file kept in a Secret block."""

    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str | None = Field(default=None, index=True)
    name: str
    pool_name: str = Field(unique=True)
    pool_type: str = "process"
    icon: str | None = None
    ingress_url: str | None = None
    config_block: str | None = None
    hardware: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = ClusterStatus.AVAILABLE
    created_at: datetime = Field(default_factory=utcnow)


class PlatformConnection(SQLModel, table=True):
    """A GPU cloud weft is connected to: its API key lives in a Secret block, its work pool in Prefect."""

    __tablename__ = "platform_connection"
    name: str = Field(primary_key=True)
    status: str = PlatformStatus.ERROR
    reason: str | None = None
    pool_name: str
    secret_block: str | None = None
    connected_by: str | None = None
    last_verified: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Placement(SQLModel, table=True):
    """Where a workflow's flow run was sent and the resource's price then, which its cost is billed at."""

    workflow_id: str = Field(primary_key=True)
    provider: str
    resource_id: str
    pool_name: str
    hourly_rate: float | None = None
    currency: str = "USD"
    billing_increment: int = 1
    minimum_charge: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


class DriftAlert(SQLModel, table=True):
    """A drift finding of the drift_monitor flow (document 000's shape), with every retrain decision."""

    __tablename__ = "drift_alert"
    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    endpoint_id: str | None = Field(default=None, index=True)
    model_id: str | None = Field(default=None, index=True)
    model_name: str | None = None
    severity: str  # low | medium | high
    type: str  # data_drift | performance_drift
    description: str
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = AlertStatus.OPEN
    recommended_action: str | None = None
    report_key: str | None = None  # the evidently HTML report in storage
    decisions: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    detected_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class Webhook(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="user.id", index=True)
    url: str
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret_block: str  # the signing secret lives in a Prefect Secret block
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    """An event for webhooks (outbox). `key` makes an event unique, so a replayed source (a restart,
    the reconciling poll) cannot emit it twice."""

    id: str = Field(default_factory=new_id, primary_key=True)
    key: str = Field(unique=True)
    user_id: str | None = Field(default=None, index=True)
    type: str = Field(index=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class WebhookDelivery(SQLModel, table=True):
    """One event for one webhook, with every attempt (status code, error, time)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (UniqueConstraint("webhook_id", "event_id"),)
    id: str = Field(default_factory=new_id, primary_key=True)
    webhook_id: str = Field(index=True)
    event_id: str = Field(index=True)
    event_type: str
    status: str = DeliveryStatus.PENDING
    attempts: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    next_attempt_at: datetime | None = Field(default_factory=utcnow, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
