"""Store an uploaded dataset file (size-capped, fingerprinted) and run its light validation."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from weft.datasets.formats import validate_file
from weft.db import session_scope
from weft.storage import Storage, get_storage
from weft.tables import Dataset, utcnow


class TooLarge(Exception):
    pass


class CappedReader:
    """Reads through a stream, hashing it and refusing to go past `cap` bytes."""

    def __init__(self, stream: BinaryIO, cap: int) -> None:
        self.stream, self.cap, self.size, self.sha256 = stream, cap, 0, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(n)
        self.size += len(chunk)
        if self.size > self.cap:
            raise TooLarge(f"the file is larger than {self.cap} bytes")
        self.sha256.update(chunk)
        return chunk


def store_upload(stream: BinaryIO, key: str, cap: int, storage: Storage | None = None) -> tuple[int, str]:
    """Copy the upload to storage; nothing remains there if it is too large. Returns (size, sha256)."""
    reader = CappedReader(stream, cap)
    (storage or get_storage()).write_stream(key, reader)
    return reader.size, reader.sha256.hexdigest()


def validate_dataset(dataset_id: str) -> None:
    """Parse the stored file once; the record becomes `ready` with its record count, or `error`."""
    with session_scope() as s:
        ds = s.get(Dataset, dataset_id)
        key, file_type = ds.storage_key, ds.file_type
    with get_storage().local(key) as local:
        result = validate_file(local, file_type)
    with session_scope() as s:
        ds = s.get(Dataset, dataset_id)
        if ds is None:  # deleted meanwhile
            return
        ds.status, ds.error, ds.record_count = ("ready", None, result.record_count) if result.ok else \
            ("error", result.error, None)
        ds.updated_at = utcnow()
        s.add(ds)
