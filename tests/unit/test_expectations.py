"""The great_expectations suite, validated chunk by chunk with one ephemeral context."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from weft.datasets.expectations import ChunkValidator, SuiteReport, build_expectations

NOT_NULL = "expect_column_values_to_not_be_null"
LENGTHS = "expect_column_value_lengths_to_be_between"
EXISTS = "expect_column_to_exist"


def by_key(report: SuiteReport) -> dict:
    return {(r.expectation, r.column): r for r in report.results}


def test_import_is_cheap():
    code = "import sys, weft.datasets.expectations; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_build_expectations_per_format():
    def kinds(fmt, columns=(), text=()):
        return [(e.expectation_type, e.column) for e in build_expectations(fmt, list(columns), list(text))]

    assert kinds("chat", ["messages"]) == [(EXISTS, "messages"), (NOT_NULL, "messages")]
    assert kinds("text") == [(EXISTS, "text"), (NOT_NULL, "text"), (LENGTHS, "text")]
    assert kinds("prompt_completion") == [(EXISTS, "prompt"), (NOT_NULL, "prompt"), (EXISTS, "completion"),
                                          (NOT_NULL, "completion"), (LENGTHS, "prompt"), (LENGTHS, "completion")]
    instruction = kinds("instruction", ["instruction", "input", "output"], ["instruction", "input", "output"])
    assert all(column != "input" for _, column in instruction)  # input may be null or empty
    assert (LENGTHS, "output") in instruction and (NOT_NULL, "instruction") in instruction
    assert kinds("custom", ["a", "b"], ["b"]) == [(EXISTS, "a"), (NOT_NULL, "a"), (EXISTS, "b"), (NOT_NULL, "b"),
                                                  (LENGTHS, "b")]
    with pytest.raises(ValueError):
        build_expectations("nope", [], [])


def test_custom_format_counts_are_summed_over_chunks_with_a_list_column():
    v = ChunkValidator("custom", ["name", "steps", "score"], ["name"])
    v.validate(pd.DataFrame({"name": ["a", None, "c"], "steps": [["x", "y"], ["y"], None],
                             "score": [1.0, 2.0, 3.0]}))
    v.validate(pd.DataFrame({"name": [None, "e", "f", None], "steps": [["z"], [], ["w"], ["v"]],
                             "score": [4.0, 5.0, 6.0, 7.0]}))
    report = v.report()
    results = by_key(report)
    assert report.suite == "weft-custom" and report.chunks == 2 and not report.success
    # results come back in suite order although GE returns them unordered
    assert [(r.expectation, r.column) for r in report.results] == [
        (EXISTS, "name"), (NOT_NULL, "name"), (EXISTS, "steps"), (NOT_NULL, "steps"),
        (EXISTS, "score"), (NOT_NULL, "score"), (LENGTHS, "name")]
    assert all(r.element_count == 7 for r in report.results)
    name, steps = results[(NOT_NULL, "name")], results[(NOT_NULL, "steps")]
    assert (name.success, name.unexpected_count) == (False, 3)
    assert (steps.success, steps.unexpected_count) == (False, 1)  # the list column works
    assert results[(NOT_NULL, "score")].success and results[(NOT_NULL, "score")].unexpected_count == 0
    assert results[(LENGTHS, "name")].success  # None values are skipped by the length check
    assert all(results[(EXISTS, c)].success for c in ("name", "steps", "score"))


def test_chat_messages_from_arrow_arrays_pass():
    table = pa.table({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                   [{"role": "user", "content": "x"}]]})
    v = ChunkValidator("chat", ["messages"], [])
    v.validate(table.to_pandas())  # list<struct> arrives as numpy object arrays
    report = v.report()
    assert report.success and report.suite == "weft-chat" and report.chunks == 1
    assert all(r.element_count == 2 and r.unexpected_count == 0 for r in report.results)


def test_instruction_empty_output_fails_length_check():
    v = ChunkValidator("instruction", ["instruction", "input", "output"], ["instruction", "input", "output"])
    v.validate(pd.DataFrame({"instruction": ["do", "go", "say"], "input": ["", None, ""],
                             "output": ["done", "", "said"]}))
    v.validate(pd.DataFrame({"instruction": ["stop"], "input": [""], "output": ["ok"]}))
    report = v.report()
    results = by_key(report)
    length = results[(LENGTHS, "output")]
    assert (length.success, length.unexpected_count, length.element_count) == (False, 1, 4)
    assert results[(NOT_NULL, "output")].success and results[(LENGTHS, "instruction")].success
    assert not any(column == "input" for _, column in results)
    assert report.chunks == 2 and not report.success


def test_chunk_missing_a_required_column_fails_column_to_exist():
    v = ChunkValidator("instruction", ["instruction", "output"], ["instruction", "output"])
    v.validate(pd.DataFrame({"instruction": ["a", "b"], "output": ["x", "y"]}))
    v.validate(pd.DataFrame({"instruction": ["c", None, "e"]}))  # no output column in this chunk
    report = v.report()
    results = by_key(report)
    assert report.chunks == 2 and not report.success
    exists = results[(EXISTS, "output")]
    assert (exists.success, exists.element_count, exists.unexpected_count) == (False, 5, 3)
    assert not results[(NOT_NULL, "output")].success and results[(NOT_NULL, "output")].unexpected_count == 3
    # the other expectations still ran on the chunk
    assert results[(EXISTS, "instruction")].success
    assert results[(NOT_NULL, "instruction")].unexpected_count == 1
    assert results[(NOT_NULL, "instruction")].element_count == 5
    assert results[(LENGTHS, "instruction")].success


def test_timing_100k_rows_six_expectations(capsys):
    n = 100_000
    rng = np.random.default_rng(0)
    prompt = np.where(rng.random(n) < 0.01, None, "some prompt text").astype(object)
    df = pd.DataFrame({"prompt": prompt, "completion": ["a completion"] * n})
    v = ChunkValidator("prompt_completion", ["prompt", "completion"], ["prompt", "completion"])
    assert len(v.suite.expectations) == 6
    v.validate(df.iloc[:10])  # warm-up
    start = time.perf_counter()
    v.validate(df)
    big = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(5):
        v.validate(df.iloc[:10])
    per_chunk = (time.perf_counter() - start) / 5
    with capsys.disabled():
        print(f"\nGE: 100k rows x 6 expectations {big:.3f} s; per-chunk overhead (10 rows) {per_chunk * 1000:.1f} ms")
    report = v.report()
    assert report.chunks == 7
    nulls = int(pd.isna(prompt).sum()) + 6 * int(pd.isna(prompt[:10]).sum())
    assert by_key(report)[(NOT_NULL, "prompt")].unexpected_count == nulls
    assert by_key(report)[(NOT_NULL, "prompt")].element_count == n + 60
