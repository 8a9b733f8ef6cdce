"""The great-expectations suite, validated chunk by chunk."""

from __future__ import annotations

import pandas as pd

from weft.datasets.expectations import ChunkValidator


def by_key(report) -> dict:
    return {(r.expectation, r.column): r for r in report.results}


def test_custom_format_counts_are_summed_over_chunks():
    v = ChunkValidator("custom", ["name", "steps"], ["name"])
    v.validate(pd.DataFrame({"name": ["a", None, "c"], "steps": [["x"], ["y"], None]}))
    v.validate(pd.DataFrame({"name": [None, "e"], "steps": [["z"], ["w"]]}))
    report = v.report()
    results = by_key(report)
    assert report.chunks == 2 and not report.success
    assert results[("expect_column_values_to_not_be_null", "name")].unexpected_count == 2
    assert results[("expect_column_values_to_not_be_null", "name")].element_count == 5
    assert results[("expect_column_values_to_not_be_null", "steps")].unexpected_count == 1


def test_instruction_format_empty_output_and_missing_column():
    v = ChunkValidator("instruction", ["instruction", "input", "output"], ["instruction", "input", "output"])
    v.validate(pd.DataFrame({"instruction": ["do", "go"], "input": ["", ""], "output": ["done", ""]}))
    v.validate(pd.DataFrame({"instruction": ["stop"]}))
    results = by_key(v.report())
    assert results[("expect_column_value_lengths_to_be_between", "output")].unexpected_count == 2
    assert not results[("expect_column_to_exist", "output")].success
    assert ("expect_column_values_to_not_be_null", "input") not in results  # input may be empty
    assert results[("expect_column_to_exist", "instruction")].success
