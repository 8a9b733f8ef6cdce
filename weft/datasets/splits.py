"""A seeded train/validation split written back to storage as JSONL, streamed batch by batch. The two files
form one folder written all or nothing (`Storage.put_dir`): never a new train file next to an old validation
file; `Storage.complete(prefix)` tells a reader that the pair is whole."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from weft.datasets.formats import iter_batches
from weft.storage import Storage


class Splits(BaseModel):
    train_key: str
    validation_key: str
    train_records: int
    validation_records: int
    validation_split: float
    seed: int


def write_splits(path: Path, file_type: str, storage: Storage, prefix: str, validation_split: float,
                 seed: int) -> Splits:
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "validation": 0}
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: (Path(tmp) / f"{name}.jsonl").open("w") for name in counts}
        try:
            for batch in iter_batches(path, file_type):
                to_validation = rng.random(batch.num_rows) < validation_split
                for record, val in zip(batch.to_pylist(), to_validation):
                    name = "validation" if val else "train"
                    files[name].write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
                    counts[name] += 1
        finally:
            for fh in files.values():
                fh.close()
        storage.put_dir(Path(tmp), prefix)
    return Splits(train_key=f"{prefix}/train.jsonl", validation_key=f"{prefix}/validation.jsonl",
                  train_records=counts["train"], validation_records=counts["validation"],
                  validation_split=validation_split, seed=seed)
