"""Datasets (document 000): the uploaded file's record, and its analysis."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime
from weft.schemas.workflows import documented_as
from weft.specs.datasets import AnalysisOptions


class DatasetOut(BaseModel):
    id: str
    name: str
    description: str | None
    file_path: str = Field(description="where the file is in object storage")
    file_type: str = Field(description="jsonl | json | csv | parquet")
    size_bytes: int
    fingerprint: str | None = Field(description="sha256 of the bytes")
    record_count: int | None
    status: str = Field(description="processing | ready | error")
    error: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @classmethod
    def of(cls, ds: Any) -> DatasetOut:
        """From a `weft.tables.Dataset` row."""
        from weft.storage import get_storage

        return cls(file_path=get_storage().url(ds.storage_key),
                   **ds.model_dump(include=set(cls.model_fields) - {"file_path"}))


# the body of POST /datasets/{id}/analyze: step 2 of analyze_dataset, validated by the workflow service
AnalysisOptionsBody = documented_as(AnalysisOptions, "AnalyzeOptions",
                                    "The analysis options; every field has a default.")


class AnalysisStarted(BaseModel):
    id: str = Field(description="the dataset")
    workflow_id: str
    status: str
    flow_run_id: str | None
    analysis: dict[str, Any] | None = Field(description="the previous analysis, until the new one is saved")


class AnalysisOut(BaseModel):
    id: str
    workflow_id: str | None
    analysis: dict[str, Any]
    splits: dict[str, Any] | None = Field(description="the train/validation split the analysis wrote, if any")
