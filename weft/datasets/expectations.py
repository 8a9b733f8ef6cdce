"""Data-quality checks with great_expectations: one ephemeral context and suite, validated chunk by
chunk so memory stays flat; counts are summed over the chunks."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

REQUIRED = {  # format -> (columns that must exist and not be null, of which text columns must not be empty)
    "chat": (["messages"], []),
    "prompt_completion": (["prompt", "completion"], ["prompt", "completion"]),
    "instruction": (["instruction", "output"], ["instruction", "output"]),
    "text": (["text"], ["text"]),
}


class ExpectationResult(BaseModel):
    expectation: str
    column: str | None
    success: bool
    element_count: int
    unexpected_count: int


class SuiteReport(BaseModel):
    suite: str
    success: bool
    chunks: int
    results: list[ExpectationResult]


def build_expectations(fmt: str, columns: list[str], text_columns: list[str]) -> list[Any]:
    """The suite for a detected format: required columns exist and are filled, text is not empty."""
    import great_expectations as gx

    required, nonempty = REQUIRED.get(fmt, (columns, []))
    nonempty = list(dict.fromkeys(nonempty + [c for c in text_columns if c in required]))
    out: list[Any] = []
    for column in required:
        out.append(gx.expectations.ExpectColumnToExist(column=column))
        out.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=column))
    out += [gx.expectations.ExpectColumnValueLengthsToBeBetween(column=c, min_value=1) for c in nonempty]
    return out


class ChunkValidator:
    """Validates a dataset chunk by chunk with one ephemeral GE context and suite."""

    def __init__(self, fmt: str, columns: list[str], text_columns: list[str]) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("weft").add_dataframe_asset("chunk")
        self.batches = asset.add_batch_definition_whole_dataframe("whole")
        self.suite = self.context.suites.add(gx.ExpectationSuite(name=f"weft-{fmt}"))
        self.order: list[tuple[str, str | None]] = []
        for expectation in build_expectations(fmt, columns, text_columns):
            self.suite.add_expectation(expectation)
            self.order.append((expectation.expectation_type, getattr(expectation, "column", None)))
        self.totals = {key: {"element_count": 0, "unexpected_count": 0, "success": True} for key in self.order}
        self.chunks = 0

    def validate(self, df) -> None:
        """Run the suite on one chunk and add up the counts."""
        result = self.batches.get_batch(batch_parameters={"dataframe": df}).validate(self.suite,
                                                                                    result_format="BASIC")
        for r in result.results:
            key = (r.expectation_config.type, r.expectation_config.kwargs.get("column"))
            total = self.totals[key]
            total["success"] &= bool(r.success)
            if "element_count" in r.result:
                total["element_count"] += r.result["element_count"]
                total["unexpected_count"] += r.result.get("unexpected_count") or 0
            elif key[0] != "expect_column_to_exist":  # the column is absent: every row of the chunk fails
                total["element_count"] += len(df)
                total["unexpected_count"] += len(df)
        self.chunks += 1

    def report(self) -> SuiteReport:
        results = [ExpectationResult(expectation=kind, column=column, **self.totals[(kind, column)])
                   for kind, column in self.order]
        return SuiteReport(suite=self.suite.name, success=all(r.success for r in results), chunks=self.chunks,
                           results=results)
