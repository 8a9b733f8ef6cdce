"""Spec of the fine-tune workflow: base model + dataset, then the adapter name and training config."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from weft.specs.base import Stage, StepDef, StepModel, StoredModelId, WorkflowType, register, step_context
from weft.training.config import TrainConfig


class ChooseBaseAndData(StepModel):
    base_model: StoredModelId = Field(description="id of a registered model with files")
    dataset_id: str

    @field_validator("dataset_id")
    @classmethod
    def _dataset_ready(cls, value: str, info: ValidationInfo):
        ctx = step_context(info)
        if ctx.session is not None:
            from weft.tables import Dataset

            if ctx.owned(Dataset, value, "dataset").status != "ready":
                raise ValueError(f"dataset {value} is not ready")
        return value


class AdapterSettings(StepModel):
    name: str = Field(min_length=1, max_length=200, description="name of the fine-tuned model")
    config: TrainConfig = Field(default_factory=TrainConfig)


class FineTuneSpec(AdapterSettings, ChooseBaseAndData):
    """Everything the fine_tune flow needs."""


FINE_TUNE = register(
    WorkflowType(
        name="fine_tune",
        title="Fine-tune",
        steps=(StepDef(1, "Select base model and dataset", ChooseBaseAndData),
               StepDef(2, "Adapter and training config", AdapterSettings)),
        spec=FineTuneSpec,
        flow_name="fine_tune",
        stages=(
            Stage("resolve_inputs", "Resolve base model and dataset"),
            Stage("prepare_dataset", "Prepare records for the chat template"),
            Stage("preflight", "Pre-flight estimate"),
            Stage("train_adapter", "Train"),
            Stage("register_adapter", "Register adapter and fine-tuned model"),
        ),
    )
)
