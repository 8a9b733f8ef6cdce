"""Spec of the dataset-analysis workflow."""

from __future__ import annotations

from pydantic import Field

from weft.specs.base import Stage, StepDef, StepModel, StoredModelId, UsableDatasetId, WorkflowType, register
from weft.specs.names import WorkflowName


class ChooseDataset(StepModel):
    dataset_id: UsableDatasetId


class AnalysisOptions(StepModel):
    model_id: StoredModelId | None = Field(default=None, description="registered model whose tokenizer measures token lengths")
    validation_split: float = Field(default=0.0, ge=0.0, le=0.5, description="0 = do not write a split")
    near_duplicate_threshold: float = Field(default=0.8, ge=0.5, le=1.0)
    outlier_iqr_k: float = Field(default=3.0, gt=0.0, le=20.0)
    token_sample_size: int = Field(default=20_000, ge=100, le=1_000_000)
    seed: int = Field(default=0, ge=0)


class AnalyzeDatasetSpec(AnalysisOptions, ChooseDataset):
    """Everything the analyze_dataset flow needs."""


ANALYZE_DATASET = register(
    WorkflowType(
        name=WorkflowName.ANALYZE_DATASET,
        title="Analyze dataset",
        steps=(StepDef(1, "Select dataset", ChooseDataset), StepDef(2, "Analysis options", AnalysisOptions)),
        spec=AnalyzeDatasetSpec,
        flow_name=WorkflowName.ANALYZE_DATASET,
        stages=(
            Stage("load_dataset", "Load dataset"),
            Stage("profile_records", "Read in chunks: schema and field statistics"),
            Stage("detect_format", "Detect instruction format"),
            Stage("token_lengths", "Token-length distribution"),
            Stage("find_duplicates", "Exact and near duplicates"),
            Stage("find_outliers", "Length outliers"),
            Stage("check_expectations", "Data-quality checks (great_expectations)"),
            Stage("recommend", "Recommendations"),
            Stage("write_split", "Train/validation split"),
            Stage("save_analysis", "Save analysis and report"),
        ),
    )
)
