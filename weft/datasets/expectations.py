"""Data-quality checks with great_expectations: one ephemeral context and suite, validated chunk by
chunk so memory stays flat; the counts are summed over the chunks.

great_expectations takes ~3 s to import, so it is imported inside the functions, never at module level.
Validating one chunk costs ~20 ms of fixed overhead plus ~1 ms per 1k rows (100k rows x 6
expectations ~0.15 s), so chunks of 10k-100k rows keep the overhead small.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# format -> (columns that must exist and not be null, of which those that must not be empty strings)
REQUIRED: dict[str, tuple[list[str], list[str]]] = {
    "chat": (["messages"], []),
    "prompt_completion": (["prompt", "completion"], ["prompt", "completion"]),
    "instruction": (["instruction", "output"], ["instruction", "output"]),
    "text": (["text"], ["text"]),
}
# format -> text columns that may legitimately be null or empty (no length check even if text_columns names them)
OPTIONAL: dict[str, set[str]] = {"instruction": {"input"}}
FORMATS = (*REQUIRED, "custom")
COLUMN_TO_EXIST = "expect_column_to_exist"
ROWS_PER_VALIDATION = 100_000


class ExpectationResult(BaseModel):
    expectation: str  # e.g. "expect_column_values_to_not_be_null"
    column: str | None
    success: bool
    element_count: int  # rows checked, summed over chunks
    unexpected_count: int  # summed over chunks


class SuiteReport(BaseModel):
    suite: str  # e.g. "weft-instruction" / "weft-custom"
    success: bool  # all results succeeded
    chunks: int
    results: list[ExpectationResult]  # in the order the suite defines them


def _import_gx() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # must be set before the first import
    import great_expectations as gx

    return gx


def build_expectations(fmt: str, columns: list[str], text_columns: list[str]) -> list[Any]:
    """The suite for a detected format: the format's required columns exist and are not null, and
    text is not empty. `custom` requires every column in `columns`. Every column in `text_columns`
    also gets a length >= 1 check (None values are skipped, as GE does by default), except columns
    the format marks optional (instruction's `input`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    gx = _import_gx()
    required, nonempty = REQUIRED.get(fmt, (list(columns), []))
    required = list(dict.fromkeys(required))
    optional = OPTIONAL.get(fmt, set())
    nonempty = list(dict.fromkeys([*nonempty, *(c for c in text_columns if c not in optional)]))
    out: list[Any] = []
    for column in required:
        out.append(gx.expectations.ExpectColumnToExist(column=column))
        out.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=column))
    out += [gx.expectations.ExpectColumnValueLengthsToBeBetween(column=c, min_value=1) for c in nonempty]
    return out


def checkable(batch: Any) -> Any:
    """The batch as GE needs it: nested values (lists, structs) become their length, nulls kept.

    GE pickles the frame it validates; Python lists in object columns make that pickling the slowest
    part of a check (4 s of 100k automotive records), and the suite only asks whether they are there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in batch.columns:
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.list_value_length(column)
        elif pa.types.is_struct(column.type):
            column = pc.if_else(pc.is_valid(column), pa.scalar(1, pa.int8()), pa.scalar(None, pa.int8()))
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


class ChunkValidator:
    """Validates a dataset chunk by chunk (memory stays flat) with one ephemeral GE context and suite."""

    def __init__(self, fmt: str, columns: list[str], text_columns: list[str]) -> None:
        gx = _import_gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        expectations = build_expectations(fmt, columns, text_columns)
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm per chunk
        asset = self.context.data_sources.add_pandas("weft").add_dataframe_asset("chunk")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self.suite = self.context.suites.add(gx.ExpectationSuite(name=f"weft-{fmt}"))
        self.order: list[str] = []  # expectation ids, in suite order (GE returns results unordered)
        self.totals: dict[str, dict[str, Any]] = {}
        for expectation in (self.suite.add_expectation(e) for e in expectations):
            self.order.append(expectation.id)
            self.totals[expectation.id] = {
                "expectation": expectation.expectation_type, "column": getattr(expectation, "column", None),
                "success": True, "element_count": 0, "unexpected_count": 0,
            }
        self.chunks = 0

    def validate(self, df: pd.DataFrame) -> None:
        """Run the suite on one chunk and add up the counts.

        A column missing from the chunk fails `expect_column_to_exist` and counts every row of the
        chunk as unexpected for that column's other expectations (GE reports an exception for them).
        """
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(self.suite, result_format="BASIC")
        rows = len(df)
        for r in result.results:
            total = self.totals[r.expectation_config.id]
            success = bool(r.success)
            total["success"] = total["success"] and success
            total["element_count"] += rows
            counts = r.result or {}
            if total["expectation"] == COLUMN_TO_EXIST:
                total["unexpected_count"] += 0 if success else rows
            elif "unexpected_count" in counts:
                total["unexpected_count"] += counts["unexpected_count"] or 0
            else:  # the metric could not be computed (missing column): no row of the chunk passed
                total["unexpected_count"] += rows
                if total["column"] in df.columns:  # not a plain missing column: say why
                    log.warning("%s(%s) raised: %s", total["expectation"], total["column"],
                                _exception_message(r.exception_info))
        self.chunks += 1

    def validate_batches(self, batches: Iterable[Any], rows: int = ROWS_PER_VALIDATION) -> None:
        """Validate Arrow record batches, regrouped into chunks of about `rows` records."""
        import pyarrow as pa

        pending: list[Any] = []
        count = 0
        for batch in batches:
            pending.append(pa.Table.from_batches([checkable(batch)]))
            count += batch.num_rows
            if count >= rows:
                self.validate(pa.concat_tables(pending, promote_options="permissive").to_pandas())
                pending, count = [], 0
        if pending:
            self.validate(pa.concat_tables(pending, promote_options="permissive").to_pandas())

    def report(self) -> SuiteReport:
        results = [ExpectationResult(**self.totals[i]) for i in self.order]
        return SuiteReport(suite=self.suite.name, success=all(r.success for r in results),
                           chunks=self.chunks, results=results)


def _exception_message(info: Any) -> str:
    """GE 1.x puts {'raised_exception', 'exception_message', ...}, or a dict of those keyed by metric."""
    if not isinstance(info, dict):
        return str(info)
    if "exception_message" in info:
        return str(info["exception_message"])
    return "; ".join(str(v.get("exception_message")) for v in info.values() if isinstance(v, dict))
