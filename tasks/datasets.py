"""Dataset-analysis tasks. The big pass (profile_records) reads the file once in chunks; the checks
after it work on its per-record arrays, kept in storage next to the dataset."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from tasks.common import step_options, wait_for_dataset
from weft.clock import utcnow
from weft.datasets import quality
from weft.datasets.formats import iter_batches
from weft.datasets.profile import Profile, ProfileArrays, profile_batches
from weft.datasets.recommend import recommendations
from weft.datasets.splits import Splits, write_splits
from weft.datasets.tokens import TokenStats, token_stats
from weft.db import session_scope
from weft.specs.datasets import AnalyzeDatasetSpec
from weft.storage import get_storage
from weft.tables import Dataset, Model


class DatasetRef(BaseModel):
    id: str
    name: str
    file_type: str
    storage_key: str
    fingerprint: str
    record_count: int


class Profiled(BaseModel):
    profile: Profile
    arrays_key: str


class FormatInfo(BaseModel):
    format: str
    columns: list[str]
    coverage: dict[str, float]  # share of records with a value in each format column


@task(**step_options("load_dataset"))
def load_dataset(spec: AnalyzeDatasetSpec) -> DatasetRef:
    """Resolve the dataset record once its upload validation has passed (waiting for it if need be)."""
    wait_for_dataset(spec.dataset_id)
    with session_scope() as s:
        ds = s.get(Dataset, spec.dataset_id)
        ref = DatasetRef(id=ds.id, name=ds.name, file_type=ds.file_type, storage_key=ds.storage_key,
                         fingerprint=ds.fingerprint, record_count=ds.record_count or 0)
    get_run_logger().info("dataset %s: %s records of %s (sha256 %s)", ref.name, ref.record_count, ref.file_type,
                          ref.fingerprint[:12])
    return ref


@task(**step_options("profile_records"))
def profile_records(ref: DatasetRef, spec: AnalyzeDatasetSpec) -> Profiled:
    """One chunked pass: field statistics, lengths, duplicate hashes, MinHash signatures, a sample."""
    log = get_run_logger()
    progress = create_progress_artifact(0.0, description=f"profiling {ref.name}")
    step = max(1, ref.record_count // 20)
    seen = {"next": step}

    def on_progress(rows: int) -> None:
        if rows >= seen["next"]:
            update_progress_artifact(progress, min(100.0, 100 * rows / max(1, ref.record_count)))
            log.info("profiled %d / %d records", rows, ref.record_count)
            seen["next"] = rows + step

    with get_storage().local(ref.storage_key) as path:
        profile, arrays = profile_batches(iter_batches(path, ref.file_type), expected_rows=ref.record_count,
                                          sample_size=spec.token_sample_size, seed=spec.seed, on_progress=on_progress)
    update_progress_artifact(progress, 100.0)
    buffer = io.BytesIO()
    np.savez(buffer, lengths=arrays.lengths, exact_hashes=arrays.exact_hashes, signatures=arrays.signatures)
    key = f"datasets/{ref.id}/analysis/{ref.fingerprint[:16]}-profile.npz"
    get_storage().write_bytes(key, buffer.getvalue())
    log.info("%d records, %d fields, format %s, %d missing values", profile.record_count, len(profile.columns),
             profile.format, profile.missing_values)
    return Profiled(profile=profile, arrays_key=key)


def load_arrays(key: str) -> ProfileArrays:
    with np.load(io.BytesIO(get_storage().read_bytes(key))) as data:
        return ProfileArrays(lengths=data["lengths"], exact_hashes=data["exact_hashes"], signatures=data["signatures"])


@task(**step_options("detect_format"))
def detect_format(profiled: Profiled) -> FormatInfo:
    """prompt/completion, instruction/input/output, chat `messages`, plain `text`, or custom."""
    p = profiled.profile
    coverage = {c: round(p.field_stats[c].present / max(1, p.record_count), 6) for c in p.format_columns}
    get_run_logger().info("instruction format: %s %s", p.format, coverage)
    return FormatInfo(format=p.format, columns=p.format_columns, coverage=coverage)


@task(**step_options("token_lengths"))
def measure_token_lengths(profiled: Profiled, spec: AnalyzeDatasetSpec) -> TokenStats | None:
    """p50/p95/max tokens with the chosen model's tokenizer and the share over its context."""
    log = get_run_logger()
    if not spec.model_id:
        log.info("no model_id given: token lengths skipped")
        return None
    with session_scope() as s:
        model = s.get(Model, spec.model_id)
        if model is None or not model.storage_uri:
            raise ValueError(f"model {spec.model_id} has no stored files to take a tokenizer from")
        context = (model.details or {}).get("context_length")
    with get_storage().local(f"models/{model.id}") as folder:
        stats = token_stats(model.id, folder, profiled.profile.sample, chat=profiled.profile.format == "chat",
                            context_length=context, sampled=profiled.profile.sampled)
    log.info("tokens p50 %.0f p95 %.0f max %d; %d over the %s-token context", stats.p50, stats.p95, stats.max,
             stats.over_context, context)
    return stats


@task(**step_options("find_duplicates"))
def find_duplicates(profiled: Profiled, spec: AnalyzeDatasetSpec) -> quality.Duplicates:
    """Exact duplicates (normalised hash) and MinHash near-duplicates."""
    arrays = load_arrays(profiled.arrays_key)
    dups = quality.find_duplicates(arrays.exact_hashes, arrays.signatures, spec.near_duplicate_threshold)
    get_run_logger().info("%d exact and %d near duplicates", dups.exact, dups.near)
    return dups


@task(**step_options("find_outliers"))
def find_outliers(profiled: Profiled, spec: AnalyzeDatasetSpec) -> quality.Outliers:
    """Records whose text length is beyond Tukey's far-out fences."""
    outliers = quality.find_outliers(load_arrays(profiled.arrays_key).lengths, spec.outlier_iqr_k)
    get_run_logger().info("%d length outliers (fences %.0f..%.0f)", outliers.count, outliers.lower_fence,
                          outliers.upper_fence)
    return outliers


@task(**step_options("check_expectations"))
def check_expectations(ref: DatasetRef, profiled: Profiled) -> dict[str, Any]:
    """A great-expectations suite for the detected format, validated chunk by chunk."""
    from weft.datasets.expectations import ChunkValidator

    p = profiled.profile
    validator = ChunkValidator(p.format, p.columns, p.text_columns)
    with get_storage().local(ref.storage_key) as path:
        validator.validate_batches(iter_batches(path, ref.file_type))
    report = validator.report()
    get_run_logger().info("data checks %s: %d of %d expectations passed", "passed" if report.success else "FAILED",
                          sum(r.success for r in report.results), len(report.results))
    return report.model_dump()


@task(**step_options("recommend"))
def recommend(analysis: dict[str, Any]) -> list[str]:
    """Recommendations derived from the numbers."""
    recs = recommendations(analysis)
    get_run_logger().info("%d recommendations", len(recs))
    return recs


@task(**step_options("write_split"))
def write_split(ref: DatasetRef, spec: AnalyzeDatasetSpec) -> Splits:
    """A seeded train/validation split written back to storage."""
    with get_storage().local(ref.storage_key) as path:
        splits = write_splits(path, ref.file_type, get_storage(), f"datasets/{ref.id}/splits", spec.validation_split,
                              spec.seed)
    get_run_logger().info("split: %d train / %d validation records", splits.train_records, splits.validation_records)
    return splits


@task(**step_options("save_analysis"))
def save_analysis(ref: DatasetRef, analysis: dict[str, Any], splits: Splits | None, workflow_id: str) -> None:
    """Store the analysis on the dataset record and publish the report as Prefect artifacts."""
    from weft.datasets.report import publish_report

    with session_scope() as s:
        ds = s.get(Dataset, ref.id)
        ds.analysis, ds.analysis_workflow_id, ds.updated_at = analysis, workflow_id, utcnow()
        if splits is not None:
            ds.splits = splits.model_dump()
        s.add(ds)
    publish_report(ref.name, analysis)
