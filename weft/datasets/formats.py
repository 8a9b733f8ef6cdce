"""Dataset files: supported types, a light streaming validation, and chunked reading as Arrow batches.

Memory stays flat: JSONL and CSV are read block by block, Parquet row group by row group.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from pydantic import BaseModel

FILE_TYPES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
BLOCK_BYTES = 2 << 20  # bigger blocks read no faster but hold far more memory in flight
FALLBACK_ROWS = 20_000


class UnsupportedFileType(ValueError):
    pass


class Validation(BaseModel):
    ok: bool
    record_count: int
    error: str | None = None
    line: int | None = None


def file_type_of(name: str) -> str:
    """jsonl / json / csv / parquet from the file name; anything else is refused."""
    suffix = Path(name).suffix.lower()
    if suffix not in FILE_TYPES:
        raise UnsupportedFileType(f"unsupported file type '{suffix or name}': use {', '.join(sorted(FILE_TYPES))}")
    return FILE_TYPES[suffix]


def validate_file(path: Path, file_type: str) -> Validation:
    """Parse every record once (streaming) and count them; the first error says where it is."""
    try:
        if file_type == "jsonl":
            count = 0
            with path.open("rb") as fh:
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        return Validation(ok=False, record_count=count, line=number,
                                          error=f"line {number}: invalid JSON ({exc.msg} at column {exc.colno})")
                    if not isinstance(record, dict):
                        return Validation(ok=False, record_count=count, line=number,
                                          error=f"line {number}: expected a JSON object, got {type(record).__name__}")
                    count += 1
            return Validation(ok=True, record_count=count)
        if file_type == "json":
            return Validation(ok=True, record_count=len(_json_array(path)))
        if file_type == "csv":
            return Validation(ok=True, record_count=sum(b.num_rows for b in pcsv.open_csv(path)))
        return Validation(ok=True, record_count=pq.ParquetFile(path).metadata.num_rows)
    except (ValueError, pa.ArrowException, OSError) as exc:
        return Validation(ok=False, record_count=0, error=f"{type(exc).__name__}: {exc}")


def _json_array(path: Path) -> list[dict]:
    with path.open("rb") as fh:
        data = json.load(fh)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError("a .json dataset must be an array of objects")
    return data


def iter_batches(path: Path, file_type: str) -> Iterator[pa.RecordBatch]:
    """The records as Arrow batches of a few MB each."""
    if file_type == "jsonl":
        yield from _jsonl_batches(path)
    elif file_type == "json":  # a JSON array has to be parsed whole; JSONL is the format for big data
        rows = _json_array(path)
        for start in range(0, len(rows), FALLBACK_ROWS):
            yield records_batch(rows[start:start + FALLBACK_ROWS])
    elif file_type == "csv":
        yield from pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES))
    else:
        yield from pq.ParquetFile(path).iter_batches(batch_size=FALLBACK_ROWS * 4)


def _jsonl_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Arrow's multithreaded JSON reader; files whose later records add fields or change types
    (Arrow fixes the schema from the first block) are read again with the json module."""
    emitted = 0
    try:
        reader = pjson.open_json(path, read_options=pjson.ReadOptions(block_size=BLOCK_BYTES),
                                 parse_options=pjson.ParseOptions(unexpected_field_behavior="error"))
        for batch in reader:
            emitted += batch.num_rows
            yield batch
        return
    except pa.ArrowInvalid:
        pass
    with path.open("rb") as fh:
        lines = (line for line in fh if line.strip())
        for _ in islice(lines, emitted):  # skip what Arrow already delivered
            pass
        while chunk := list(islice(lines, FALLBACK_ROWS)):
            yield records_batch([json.loads(line) for line in chunk])


def records_batch(records: list[dict]) -> pa.RecordBatch:
    """Python records as one batch whose columns are the union of every record's keys."""
    return pa.RecordBatch.from_struct_array(pa.array(records))
