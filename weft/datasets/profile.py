"""One chunked pass over a dataset: field statistics, instruction format, per-record text length,
exact-duplicate hashes, MinHash signatures and a uniform sample of record texts.

Per-record results are small numpy arrays (about 150 bytes a record), so memory stays far below
the data size. Everything per batch is vectorised with pyarrow.compute / numpy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

NUM_PERM = 32
SAMPLE_SIZE = 20_000
MOST_COMMON = 3
COUNTER_CAP = 200_000  # distinct values tracked for most_common; beyond that the list is approximate
MERSENNE = np.uint64((1 << 61) - 1)
FORMATS = {  # format -> columns that identify it
    "chat": {"messages"},
    "prompt_completion": {"prompt", "completion"},
    "instruction": {"instruction", "output"},
    "text": {"text"},
}


class FieldStats(BaseModel):
    type: str
    present: int
    missing: int
    unique_values: int | None = None
    most_common: list[Any] | None = None
    top_count: list[Any] | None = None  # [most common value, its count]
    avg_length: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None


class ProfileArrays(BaseModel):
    """Per-record arrays kept in memory between the profile and the checks that use them."""

    model_config = {"arbitrary_types_allowed": True}
    lengths: Any
    exact_hashes: Any
    signatures: Any


class Profile(BaseModel):
    record_count: int
    columns: list[str]
    field_stats: dict[str, FieldStats]
    format: str
    format_columns: list[str]
    text_columns: list[str]
    missing_values: int
    missing_by_field: dict[str, int]
    sample: list[Any]  # record texts (or chat message lists) of a uniform sample
    sampled: bool


def detect_format(columns: Iterable[str]) -> str:
    cols = set(columns)
    return next((fmt for fmt, needed in FORMATS.items() if needed <= cols), "custom")


def type_name(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "array"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_null(t):
        return "null"
    return "object"


def column_text(arr: pa.Array) -> pa.Array | None:
    """A column as one string per record (lists joined, chat messages' contents joined), or None."""
    t = arr.type
    kind = type_name(t)
    if kind == "string":
        return arr
    if kind in ("number", "boolean"):
        return pc.cast(arr, pa.string())
    if kind == "array":
        values = t.value_type
        if pa.types.is_string(values):
            return pc.binary_join(arr, " ")
        if pa.types.is_struct(values) and values.get_field_index("content") >= 0:
            flat = pc.list_flatten(arr)
            contents = pc.struct_field(flat, "content")
            if pa.types.is_string(contents.type):
                offsets = arr.offsets if arr.null_count == 0 else pc.fill_null(arr, []).offsets
                return pc.binary_join(pa.ListArray.from_arrays(offsets, contents), "\n")
    return None


def hash_strings(values: pa.Array) -> np.ndarray:
    """Deterministic 64-bit hashes of a string array: each distinct value is hashed once."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    dictionary = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(dictionary)[indices] if len(dictionary) else np.zeros(len(values), np.uint64)


class FieldAccumulator:
    def __init__(self) -> None:
        self.types: set[str] = set()
        self.present = self.missing = 0
        self.hashes: list[np.ndarray] = []
        self.counter: Counter = Counter()
        self.len_sum = self.len_count = 0
        self.len_min: int | None = None
        self.len_max: int | None = None
        self.num_sum = 0.0
        self.num_count = 0
        self.num_min: float | None = None
        self.num_max: float | None = None

    def add(self, arr: pa.Array) -> None:
        kind = type_name(arr.type)
        n = len(arr)
        if kind == "null":
            self.missing += n
            return
        self.types.add(kind)
        empty = 0
        if kind == "string":
            lengths = pc.utf8_length(arr)
            empty = pc.sum(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0)).as_py() or 0
        elif kind == "array":
            lengths = pc.list_value_length(arr)
            empty = pc.sum(pc.equal(lengths, 0)).as_py() or 0
        else:
            lengths = None
        missing = arr.null_count + empty
        self.missing += missing
        self.present += n - missing
        if lengths is not None:
            self._lengths(lengths)
        if kind in ("string", "number", "boolean"):
            valid = arr.drop_null()
            self.hashes.append(hash_strings(valid if kind == "string" else pc.cast(valid, pa.string())))
            if len(self.counter) < COUNTER_CAP:
                counts = pc.value_counts(valid)
                self.counter.update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
        if kind == "number":
            valid = arr.drop_null()
            if len(valid):
                mm = pc.min_max(valid).as_py()
                self.num_min = mm["min"] if self.num_min is None else min(self.num_min, mm["min"])
                self.num_max = mm["max"] if self.num_max is None else max(self.num_max, mm["max"])
                self.num_sum += pc.sum(valid).as_py()
                self.num_count += len(valid)

    def _lengths(self, lengths: pa.Array) -> None:
        valid = lengths.drop_null()
        if not len(valid):
            return
        mm = pc.min_max(valid).as_py()
        self.len_min = mm["min"] if self.len_min is None else min(self.len_min, mm["min"])
        self.len_max = mm["max"] if self.len_max is None else max(self.len_max, mm["max"])
        self.len_sum += pc.sum(valid).as_py()
        self.len_count += len(valid)

    def stats(self) -> FieldStats:
        kind = self.types.pop() if len(self.types) == 1 else ("mixed" if self.types else "null")
        stats = FieldStats(type=kind, present=self.present, missing=self.missing)
        if self.hashes:
            stats.unique_values = int(len(np.unique(np.concatenate(self.hashes))))
            stats.most_common = [value for value, _ in self.counter.most_common(MOST_COMMON)]
            stats.top_count = list(self.counter.most_common(1)[0]) if self.counter else None
        if self.len_count:
            stats.avg_length = round(self.len_sum / self.len_count, 3)
            stats.min_length, stats.max_length = self.len_min, self.len_max
        if self.num_count:
            stats.min, stats.max, stats.mean = self.num_min, self.num_max, round(self.num_sum / self.num_count, 6)
        return stats


class MinHasher:
    """MinHash signatures of word 3-gram sets for a whole batch at once (multiply-shift hashing)."""

    def __init__(self, num_perm: int = NUM_PERM, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 1 << 62, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 1 << 62, size=num_perm, dtype=np.uint64)

    def signatures(self, normalized: pa.Array) -> np.ndarray:
        n = len(normalized)
        words = pc.split_pattern_regex(normalized, r"[^a-z0-9]+", )
        counts = pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
        hashes = hash_strings(pc.list_flatten(words))
        record = np.repeat(np.arange(n), counts)
        if len(hashes) >= 3:  # 3-grams within a record; records with < 3 words use their words
            tri = hashes[:-2] * np.uint64(0x9E3779B97F4A7C15) ^ hashes[1:-1] * np.uint64(0xC2B2AE3D27D4EB4F) ^ hashes[2:]
            ok = record[:-2] == record[2:]
            short = np.isin(record, np.flatnonzero(counts < 3))
            shingles = np.concatenate([tri[ok], hashes[short]])
            owners = np.concatenate([record[:-2][ok], record[short]])
        else:
            shingles, owners = hashes, record
        order = np.argsort(owners, kind="stable")
        shingles, owners = shingles[order], owners[order]
        sig = np.full((n, len(self.a)), np.iinfo(np.uint32).max, dtype=np.uint32)
        if len(shingles):
            starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
            rows = owners[starts]
            for j, (a, b) in enumerate(zip(self.a, self.b)):
                values = ((shingles * a + b) >> np.uint64(32)).astype(np.uint32)
                sig[rows, j] = np.minimum.reduceat(values, starts)
        return sig


def profile_batches(batches: Iterable[pa.RecordBatch], *, expected_rows: int | None = None,
                    sample_size: int = SAMPLE_SIZE, seed: int = 0,
                    on_progress: Callable[[int], None] | None = None) -> tuple[Profile, ProfileArrays]:
    """Profile every record of `batches` in one pass."""
    fields: dict[str, FieldAccumulator] = {}
    capacity = max(expected_rows or 0, 1024)  # per-record arrays, preallocated (no copy at the end)
    lengths = np.zeros(capacity, np.int64)
    exact = np.zeros(capacity, np.uint64)
    sigs = np.zeros((capacity, NUM_PERM), np.uint32)
    hasher = MinHasher(seed=seed + 1)
    rng = np.random.default_rng(seed)
    sample_keys = np.empty(0)
    sample: list[Any] = []
    rows = 0
    fmt = None
    for batch in batches:
        n = batch.num_rows
        if fmt is None:
            fmt = detect_format(batch.schema.names)
        for name in batch.schema.names:
            fields.setdefault(name, FieldAccumulator()).missing += rows if name not in fields else 0
        for name, acc in fields.items():
            if name in batch.schema.names:
                acc.add(batch.column(name))
            else:
                acc.missing += n
        texts = [t for name in batch.schema.names if (t := column_text(batch.column(name))) is not None]
        joined = pc.binary_join_element_wise(*[pc.fill_null(t, "") for t in texts], " | ") if texts else \
            pa.array([""] * n)
        if rows + n > len(lengths):
            grow = max(rows + n, 2 * len(lengths))
            lengths, exact = np.resize(lengths, grow), np.resize(exact, grow)
            sigs = np.resize(sigs, (grow, NUM_PERM))
        lengths[rows:rows + n] = pc.utf8_length(joined).to_numpy(zero_copy_only=False)
        normalized = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(joined), r"\s+", " "))
        exact[rows:rows + n] = hash_strings(normalized)
        sigs[rows:rows + n] = hasher.signatures(normalized)
        keys = rng.random(n)  # a uniform sample: keep the records with the largest random keys
        threshold = np.partition(sample_keys, -sample_size)[-sample_size] if len(sample_keys) >= sample_size else -1
        picked = np.flatnonzero(keys > threshold)
        if len(picked):
            values = (batch.column("messages").take(pa.array(picked)).to_pylist() if fmt == "chat"
                      and "messages" in batch.schema.names else joined.take(pa.array(picked)).to_pylist())
            sample_keys = np.concatenate([sample_keys, keys[picked]])
            sample.extend(values)
            if len(sample_keys) > 2 * sample_size:
                keep = np.argsort(sample_keys)[-sample_size:]
                sample_keys, sample = sample_keys[keep], [sample[i] for i in keep]
        rows += n
        if on_progress:
            on_progress(rows)
    if len(sample_keys) > sample_size:
        keep = np.argsort(sample_keys)[-sample_size:]
        sample = [sample[i] for i in keep]
    stats = {name: acc.stats() for name, acc in fields.items()}
    missing_by_field = {name: s.missing for name, s in stats.items() if s.missing}
    fmt = fmt or "custom"
    profile = Profile(
        record_count=rows, columns=list(fields), field_stats=stats, format=fmt,
        format_columns=sorted(FORMATS.get(fmt, set())),
        text_columns=[name for name, s in stats.items() if s.type == "string"],
        missing_values=sum(missing_by_field.values()), missing_by_field=missing_by_field,
        sample=sample, sampled=rows > sample_size,
    )
    arrays = ProfileArrays(lengths=lengths[:rows], exact_hashes=exact[:rows], signatures=sigs[:rows])
    return profile, arrays
