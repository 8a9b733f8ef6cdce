"""Spec of the evaluate_model workflow: the fine-tuned model and its test set, then the benchmarks
and the promotion gate."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, model_validator

from weft import pools
from weft.specs.base import (
    Stage,
    StepDef,
    StepModel,
    StoredModelId,
    UsableDatasetId,
    WorkflowType,
    register,
    step_context,
)
from weft.specs.names import WorkflowName


class ChooseModelAndTestSet(StepModel):
    model_id: StoredModelId = Field(description="the fine-tuned model (base + adapter) to evaluate")
    dataset_id: UsableDatasetId = Field(description="test set: a registered dataset (its held-out split when the "
                                                   "model was trained on it with a validation_split)")
    base_model_id: StoredModelId | None = Field(default=None, description="compare against this model instead "
                                                                          "of the adapter's base")
    test_set_path: str | None = Field(default=None, description="where the test set was imported from (display)")

    @model_validator(mode="after")
    def _comparable(self, info: ValidationInfo) -> ChooseModelAndTestSet:
        ctx = step_context(info)
        if ctx.session is not None and self.base_model_id is None:
            from weft.tables import Model

            if ctx.session.get(Model, self.model_id).provider_type != "adapter":
                raise ValueError(f"model {self.model_id} is not a fine-tuned adapter model: "
                                 "name base_model_id to compare it with")
        return self


class EvaluationSettings(StepModel):
    benchmarks: list[str] = Field(default_factory=lambda: ["weft_general_qa"],
                                  description="lm-eval tasks run on base and fine-tuned (project tasks work offline)")
    benchmark_limit: int | None = Field(default=100, ge=1, description="examples per benchmark task")
    max_examples: int = Field(default=200, ge=1, le=100_000, description="test examples compared")
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    min_improvement: float = Field(default=0.0, ge=-1.0, le=1.0,
                                   description="promote when the accuracy gain's lower confidence bound exceeds it")
    max_regression: float = Field(default=0.05, ge=0.0, le=1.0,
                                  description="largest drop of any benchmark metric that still allows promotion")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)


class EvaluateSpec(EvaluationSettings, ChooseModelAndTestSet):
    """Everything the evaluate_model flow needs."""


EVALUATE = register(
    WorkflowType(
        name=WorkflowName.EVALUATE_MODEL,
        title="Evaluate",
        steps=(StepDef(1, "Select model and test set", ChooseModelAndTestSet),
               StepDef(2, "Benchmarks and promotion gate", EvaluationSettings)),
        spec=EvaluateSpec,
        flow_name=WorkflowName.EVALUATE_MODEL,
        pools=pools.GPU_FIRST,
        stages=(
            Stage("resolve_evaluation", "Resolve model, adapter, base and test set"),
            Stage("load_test_set", "Load the test examples"),
            Stage("compare_outputs", "Answer the test set with base and fine-tuned"),
            Stage("check_adapter_effect", "Check the adapter changes outputs"),
            Stage("run_benchmarks", "lm-eval benchmarks on base and fine-tuned"),
            Stage("score_and_gate", "Score, confidence interval, promotion gate"),
        ),
    )
)
