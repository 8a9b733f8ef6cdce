"""Spec of the fine-tune workflow: base model + dataset, then the adapter name and training config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from weft import pools
from weft.specs.base import Stage, StepDef, StepModel, StoredModelId, UsableDatasetId, WorkflowType, register
from weft.specs.export import ExportOptions
from weft.specs.names import WorkflowName
from weft.tracking import tracker_unavailable
from weft.training.config import TrainConfig


class ChooseBaseAndData(StepModel):
    base_model: StoredModelId = Field(description="id of a registered model with files")
    dataset_id: UsableDatasetId


class AdapterSettings(StepModel):
    name: str = Field(min_length=1, max_length=200, description="name of the fine-tuned model")
    config: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportOptions | None = Field(default=None, description="export the fine-tuned model when trained")
    experiment_tracker: Literal["mlflow", "wandb"] | None = Field(
        default=None, description="track the run's params, metrics and artifacts in this tracker")
    project_name: str | None = Field(default=None, min_length=1, max_length=200,
                                     description="the tracker's experiment (project) the run belongs to")
    provider: str | None = Field(default=None, description="the platform to train on (GET /api/v1/platforms)")
    resource_id: str | None = Field(default=None, description="the resource type on that platform "
                                                              "(GET /api/v1/resources)")

    @field_validator("experiment_tracker")
    @classmethod
    def _tracker_available(cls, value: str | None) -> str | None:
        if why := tracker_unavailable(value):  # accepted only where weft really logs to it
            raise ValueError(why)
        return value


class FineTuneSpec(AdapterSettings, ChooseBaseAndData):
    """Everything the fine_tune flow needs."""


FINE_TUNE = register(
    WorkflowType(
        name=WorkflowName.FINE_TUNE,
        title="Fine-tune",
        steps=(StepDef(1, "Select base model and dataset", ChooseBaseAndData),
               StepDef(2, "Adapter and training config", AdapterSettings)),
        spec=FineTuneSpec,
        flow_name=WorkflowName.FINE_TUNE,
        pools=pools.GPU_FIRST,
        stages=(
            Stage("resolve_inputs", "Resolve base model and dataset"),
            Stage("prepare_dataset", "Prepare records for the chat template"),
            Stage("preflight", "Pre-flight estimate"),
            Stage("train_adapter", "Train"),
            Stage("register_adapter", "Register adapter and fine-tuned model"),
            Stage("start_export", "Start its export workflow, when the job config asks"),
        ),
    )
)
