"""Store an uploaded dataset file (size-capped, fingerprinted) and run its light validation."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import suppress
from typing import BinaryIO

from sqlmodel import Session, select

from weft.clock import utcnow
from weft.datasets.formats import file_type_of, validate_file
from weft.db import session_scope
from weft.errors import Unavailable
from weft.paths import resolve_disk_path
from weft.settings import get_settings
from weft.statuses import DatasetStatus
from weft.storage import Storage, get_storage
from weft.tables import Dataset, new_id


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
    """Copy the upload to storage, all or nothing: nothing remains there if it is too large, the client goes
    away or storage fails (`Unavailable`). Store it before its database row, so no row points at nothing.
    Returns (size, sha256)."""
    reader = CappedReader(stream, cap)
    (storage or get_storage()).write_stream(key, reader)
    return reader.size, reader.sha256.hexdigest()


def validate_dataset(dataset_id: str) -> None:
    """Parse the stored file once; the record becomes `ready` with its record count, or `error` (also when
    object storage is unreachable, then `Unavailable` is raised: a record left `processing` would keep
    workflows waiting for a validation that is not coming)."""
    with session_scope() as s:
        ds = s.get(Dataset, dataset_id)
        key, file_type = ds.storage_key, ds.file_type
    try:
        with get_storage().local(key) as local:
            result = validate_file(local, file_type)
    except Unavailable as exc:
        _set_outcome(dataset_id, DatasetStatus.ERROR, f"the stored file could not be read: {exc.message}", None)
        raise
    _set_outcome(dataset_id, *((DatasetStatus.READY, None, result.record_count) if result.ok else
                               (DatasetStatus.ERROR, result.error, None)))


def _set_outcome(dataset_id: str, status: DatasetStatus, error: str | None, record_count: int | None) -> None:
    with session_scope() as s:
        ds = s.get(Dataset, dataset_id)
        if ds is None:  # deleted meanwhile
            return
        ds.status, ds.error, ds.record_count, ds.updated_at = status, error, record_count, utcnow()
        s.add(ds)


def wait_until_validated(dataset_id: str, timeout: float | None = None, poll: float = 0.5,
                         on_wait: Callable[[float], None] | None = None) -> None:
    """Until the upload validation of `dataset_id` is done (`ready`); raises ValueError when it failed,
    the dataset is gone, or it is still `processing` after `timeout` (WEFT_DATASET_READY_TIMEOUT_SECONDS).
    `on_wait(timeout)` is called once when it has to wait."""
    timeout = get_settings().dataset_ready_timeout_seconds if timeout is None else timeout
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        with session_scope() as s:
            ds = s.get(Dataset, dataset_id)
            status, error = (ds.status, ds.error) if ds is not None else (None, None)
        if status == DatasetStatus.READY:
            return
        if status is None:
            raise ValueError(f"dataset {dataset_id} does not exist")
        if status != DatasetStatus.PROCESSING:
            raise ValueError(f"dataset {dataset_id} failed validation: {error or status}")
        if time.monotonic() >= deadline:
            raise ValueError(f"dataset {dataset_id} is still being validated after {timeout:g} s "
                             "(WEFT_DATASET_READY_TIMEOUT_SECONDS)")
        if not waited and on_wait is not None:
            on_wait(timeout)
        waited = True
        time.sleep(poll)


def import_local_file(session: Session, user_id: str, path: str) -> Dataset:
    """Register a file on the API's disk (inside WEFT_DISK_ROOTS) as a dataset, as an upload would be,
    and validate it now; the same content imported again is the same dataset. Raises ValueError
    (DiskPathError, UnsupportedFileType) for a path that cannot be used."""
    source = resolve_disk_path(path)
    if not source.is_file():
        raise ValueError(f"{source} is not a file")
    file_type = file_type_of(source.name)
    with source.open("rb") as fh:
        sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    existing = session.exec(select(Dataset).where(Dataset.user_id == user_id, Dataset.fingerprint == sha256,
                                                  Dataset.status == DatasetStatus.READY)).first()
    if existing is not None:
        return existing
    dataset_id = new_id()
    key = f"datasets/{dataset_id}/{dataset_id}.{file_type}"
    storage = get_storage()
    with source.open("rb") as fh:
        size, _ = store_upload(fh, key, get_settings().max_upload_mb * 2**20, storage)
    try:
        session.add(Dataset(id=dataset_id, user_id=user_id, name=source.stem, file_name=source.name,
                            file_type=file_type, description=f"imported from {source}", storage_key=key,
                            size_bytes=size, fingerprint=sha256, status=DatasetStatus.PROCESSING))
        session.commit()
    except BaseException:
        session.rollback()
        with suppress(Exception):  # no row: the stored file would be an orphan
            storage.delete(f"datasets/{dataset_id}")
        raise
    validate_dataset(dataset_id)
    ds = session.get(Dataset, dataset_id)
    session.refresh(ds)
    if ds.status != DatasetStatus.READY:
        raise ValueError(f"{source} is not a valid {file_type} dataset: {ds.error}")
    return ds
