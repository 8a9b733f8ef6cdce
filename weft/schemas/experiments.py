"""Experiments (document 003): tracked training runs, read back from the tracker."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime


class ExperimentOut(BaseModel):
    id: str = Field(description="the job id (POST /experiments/compare takes it)")
    tracker: str = Field(description="mlflow")
    project: str = Field(description="the tracker's experiment: the job's project_name")
    name: str = Field(description="the run's name: the job's name")
    status: str = Field(description="pending | running | completed | failed | cancelled")
    metrics: dict[str, float] = Field(description="the latest value of every metric logged, final_loss, best_loss "
                                                  "(and best_eval_loss when it was evaluated)")
    config: dict[str, Any] = Field(description="the run's params: training config, base model, dataset")
    created_at: UtcDatetime
    ended_at: UtcDatetime | None
    run_id: str = Field(description="the tracker's own run id")


class ExperimentList(BaseModel):
    experiments: list[ExperimentOut]
    total: int
    limit: int
    offset: int
