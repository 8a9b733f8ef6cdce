"""Analyse a dataset: statistics, format, tokens, duplicates, outliers, data checks, recommendations."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.datasets import (
    check_expectations,
    detect_format,
    find_duplicates,
    find_outliers,
    load_dataset,
    measure_token_lengths,
    profile_records,
    recommend,
    save_analysis,
    write_split,
)
from weft.datasets.report import assemble
from weft.specs.datasets import AnalyzeDatasetSpec
from weft.specs.names import WorkflowName
from weft.tables import Dataset


@flow(name=WorkflowName.ANALYZE_DATASET.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("dataset_id", Dataset), names.workflow()))
def analyze_dataset(spec: AnalyzeDatasetSpec, workflow_id: str | None = None, cache_version: int = 0,
                    owner_id: str | None = None) -> dict:
    """Load in chunks → field statistics → format → token lengths → duplicates → outliers → data
    checks → recommendations → split (when asked) → save and report."""
    ref = workflow_ref(WorkflowName.ANALYZE_DATASET, spec, workflow_id, owner_id)
    dataset = load_dataset(spec)
    profiled = profile_records(dataset, spec)
    fmt = detect_format(profiled)
    tokens = measure_token_lengths(profiled, spec)
    dups = find_duplicates(profiled, spec)
    outliers = find_outliers(profiled, spec)
    checks = check_expectations(dataset, profiled)
    analysis = assemble(dataset.fingerprint, profiled.profile, fmt, tokens, dups, outliers, checks)
    analysis["recommendations"] = recommend(analysis)
    splits = write_split(dataset, spec) if spec.validation_split > 0 else None
    save_analysis(dataset, analysis, splits, ref.workflow_id)
    return analysis
