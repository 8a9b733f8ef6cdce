"""Every status value weft stores or returns, defined once.

A workflow's status is upper case (document 004: `PENDING` … `CANCELLED`); every other status is
lower case, as the source documents spell them. They are `StrEnum`s, so a stored or JSON value
compares equal to its member.
"""

from __future__ import annotations

from enum import StrEnum


class WorkflowStatus(StrEnum):
    """A workflow, derived from its flow run's state."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED})
RETRYABLE = frozenset({WorkflowStatus.FAILED, WorkflowStatus.CANCELLED})


class StageStatus(StrEnum):
    """One step of a workflow (a task run of its flow), as shown in `steps[]`."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CACHED = "cached"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_RUN = "not_run"


class RunStatus(StrEnum):
    """A job or an evaluation (documents 000, 002, 003), lower case. A job's status is its workflow's,
    lower-cased, so it can also be `cancelling`."""

    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class ModelStatus(StrEnum):
    """A registry record. Document 002's `ready` is `active` (`MODEL_STATUS_ALIASES`)."""

    UPLOADING = "uploading"
    ACTIVE = "active"
    ARCHIVED = "archived"
    ERROR = "error"


MODEL_STATUS_ALIASES = {"ready": ModelStatus.ACTIVE}


class DatasetStatus(StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    ERROR = "error"


class EndpointStatus(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    ACTIVE = "active"
    UPDATING = "updating"  # desired state changed; the controller has not converged yet
    STOPPING = "stopping"  # deleted: draining, then stopped
    FAILED = "failed"
    STOPPED = "stopped"


class EndpointKind(StrEnum):
    """How an endpoint serves: replicas of an LLM server, a cloud provider behind a proxy, or replicas of an
    uploaded classic model (document 001: /api/v1/predict)."""

    REPLICAS = "replicas"
    PROXY = "proxy"
    CLASSIC = "classic"


RUNS_REPLICAS = frozenset({EndpointKind.REPLICAS, EndpointKind.CLASSIC})
SERVING = frozenset({EndpointStatus.ACTIVE, EndpointStatus.UPDATING})


class RevisionStatus(StrEnum):
    """A revision: `deploying` until its replicas first serve, then `active` while it has traffic and
    `inactive` without; `failed` when its replicas never came up."""

    DEPLOYING = "deploying"
    ACTIVE = "active"
    INACTIVE = "inactive"
    FAILED = "failed"


class ReplicaState(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNRESPONSIVE = "unresponsive"
    DRAINING = "draining"  # out of rotation; stopped once its requests had time to finish
    STOPPED = "stopped"


class ClusterStatus(StrEnum):
    AVAILABLE = "available"


class PlatformStatus(StrEnum):
    """A compute platform: connected (its key verified), error (the check failed), or not connected."""

    CONNECTED = "connected"
    ERROR = "error"
    DISCONNECTED = "disconnected"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
