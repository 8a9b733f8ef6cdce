"""Evaluations (document 002: base vs fine-tuned on a test set, the promotion gate) and experiment
comparisons (document 003)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime
from weft.specs.evaluation import EvaluationSettings


class EvaluateRequest(EvaluationSettings):
    """Document 002's body (`test_set_path`, `base_model_name`) or a registered `dataset_id`."""

    test_set_path: str | None = Field(default=None, description="a JSONL/CSV/... file in the disk roots")
    dataset_id: str | None = Field(default=None, description="or a registered dataset")
    base_model_name: str | None = Field(default=None, description="compare with this model instead of the base")


class EvaluationCreated(BaseModel):
    evaluation_id: str = Field(description="also the evaluate_model workflow's id")
    status: str
    message: str
    flow_run_id: str | None


class EvaluationSummary(BaseModel):
    """An evaluation as lists show it; its status follows the workflow's run."""

    id: str
    model_id: str | None
    status: str = Field(description="pending | running | completed | failed | cancelled")
    test_set_path: str | None
    dataset_id: str | None
    base_model_name: str | None
    fine_tuned_name: str | None
    promoted: bool
    error: str | None
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    flow_run_id: str | None
    created_at: UtcDatetime


class EvaluationOut(EvaluationSummary):
    results: dict[str, Any] = Field(description="base and fine_tuned scores with their confidence intervals")
    examples: list[dict[str, Any]]
    benchmarks: list[dict[str, Any]]
    gate: dict[str, Any] = Field(description="the promotion gate's inputs and decision")


class EvaluationList(BaseModel):
    """Document 002's page/limit listing."""

    data: list[EvaluationSummary]
    total: int
    page: int
    limit: int


class EvaluationUpdate(BaseModel):
    """A worker's report (document 002): what it sends replaces the stored values."""

    status: Literal["pending", "running", "completed", "failed"] | None = None
    results: dict[str, Any] | None = None
    examples: list[dict[str, Any]] | None = Field(default=None, max_length=100_000)


class CompareRequest(BaseModel):
    experiment_ids: list[str] = Field(min_length=2, max_length=20, description="job or evaluation ids")


class Comparison(BaseModel):
    metrics: dict[str, list[Any]] = Field(description="each numeric metric, one value (or null) per experiment")
    configs: list[dict[str, Any]]
    statuses: list[str]
    best_performer: str | None = Field(description="highest accuracy, else lowest loss")
    runtime_seconds: list[Any] = Field(description="measured, per experiment (null when unknown)")
    cost_analysis: CostAnalysis


class CostAnalysis(BaseModel):
    total_costs: list[float | None] = Field(description="each finished run's measured run time x its resource's "
                                                        "hourly rate (null where unpriced or not finished)")
    cost_per_accuracy_point: list[float | None] = Field(description="cost / (accuracy x 100), where both are known")


class CompareOut(BaseModel):
    comparison: Comparison
