"""The workflow-type registry: a type is its ordered step models, its merged spec and its flow.

The merged spec (every step's fields together) is exactly the flow's `spec` parameter, so a flow
run started from the Prefect UI, from `POST /api/v1/...-workflow` or from a schedule is the same.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from weft.statuses import DatasetStatus


class StepModel(BaseModel):
    """Base of every step: unknown fields are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class StepDef:
    number: int
    title: str
    model: type[StepModel]


@dataclass(frozen=True)
class Stage:
    """One task of the flow, as shown in the workflow's `steps[]` (its task-run name is `id`)."""

    id: str
    title: str


@dataclass(frozen=True)
class WorkflowType:
    name: str
    title: str
    steps: tuple[StepDef, ...]
    spec: type[StepModel]
    flow_name: str
    stages: tuple[Stage, ...]
    deployment_name: str = "default"
    compensate: Callable[[str], None] | None = field(default=None, compare=False)
    # Checked before every start (API, retry): raises weft.errors.Refused when the run must not happen now.
    admit: Callable[[Any, dict[str, Any]], None] | None = field(default=None, compare=False)
    # Work pools in order of preference, each with a deployment named after it (prefect.yaml);
    # empty: the single `deployment_name` deployment.
    pools: tuple[str, ...] = ()

    @property
    def deployment(self) -> str:
        return f"{self.flow_name}/{self.deployment_name}"

    def deployment_on(self, pool: str) -> str:
        return f"{self.flow_name}/{pool}"

    def step(self, number: int) -> StepDef | None:
        return next((s for s in self.steps if s.number == number), None)


class StepContext(BaseModel):
    """What step validators may look at: the user, the earlier steps' data, and a DB session."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    user_id: str | None = None
    previous: dict[str, Any] = {}
    session: Any = None

    def owned(self, table: type, row_id: str, kind: str) -> Any:
        """The caller's row `row_id` of `table`, or a validation error naming what is missing."""
        row = self.session.get(table, row_id)
        if row is None or row.user_id != self.user_id:
            raise ValueError(f"{kind} {row_id} does not exist")
        return row


def step_context(info) -> StepContext:
    """The StepContext of a validator call (an empty one when validated outside the API)."""
    ctx = info.context if info is not None else None
    return ctx if isinstance(ctx, StepContext) else StepContext()


def stored_model(value: str | None, info: ValidationInfo) -> str | None:
    """`value` names one of the caller's models whose files are in storage (not a cloud model)."""
    ctx = step_context(info)
    if value and ctx.session is not None:
        from weft.tables import Model

        if not ctx.owned(Model, value, "model").storage_uri:
            raise ValueError(f"model {value} has no files in storage (a cloud model)")
    return value


def usable_dataset(value: str, info: ValidationInfo) -> str:
    """`value` names one of the caller's datasets that passed its upload validation or is still in it
    (`processing`: the flow's first step waits for the outcome); one that failed it is refused."""
    ctx = step_context(info)
    if ctx.session is not None:
        from weft.tables import Dataset

        ds = ctx.owned(Dataset, value, "dataset")
        if ds.status not in (DatasetStatus.READY, DatasetStatus.PROCESSING):
            raise ValueError(f"dataset {value} failed validation" + (f": {ds.error}" if ds.error else ""))
    return value


StoredModelId = Annotated[str, AfterValidator(stored_model)]
UsableDatasetId = Annotated[str, AfterValidator(usable_dataset)]

REGISTRY: dict[str, WorkflowType] = {}


def register(wt: WorkflowType) -> WorkflowType:
    REGISTRY[wt.name] = wt
    return wt


def get_type(name: str) -> WorkflowType:
    importlib.import_module("weft.specs")  # registers every spec module

    return REGISTRY[name]
