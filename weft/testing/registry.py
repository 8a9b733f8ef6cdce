"""Registry rows for in-process flow tests and benchmarks: a user, a base model with its files in
storage, and ready datasets (what onboarding and an upload would have left)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from weft.db import session_scope
from weft.model_metadata import extract_metadata
from weft.statuses import DatasetStatus
from weft.storage import get_storage
from weft.tables import Dataset, Model, User


def register_user() -> str:
    user = User(email=f"{uuid.uuid4().hex[:8]}@example.com", username=uuid.uuid4().hex[:10], password_hash="x")
    with session_scope() as s:
        s.add(user)
    return user.id


def register_model(user_id: str, model_dir: Path, name: str = "tiny base") -> str:
    storage = get_storage()
    base = Model(user_id=user_id, name=name, provider_type="disk", details=extract_metadata(model_dir).model_dump())
    storage.put_dir(model_dir, f"models/{base.id}")
    base.storage_uri = storage.url(f"models/{base.id}")
    with session_scope() as s:
        s.add(base)
    return base.id


def register_dataset(user_id: str, name: str, records: list[dict[str, Any]], status: str = DatasetStatus.READY) -> str:
    """A dataset of `records`; `status="processing"` is an upload whose validation has not run yet."""
    data = "\n".join(json.dumps(r) for r in records).encode()
    ds = Dataset(user_id=user_id, name=name, file_name=f"{name}.jsonl", file_type="jsonl",
                 storage_key=f"datasets/{uuid.uuid4().hex}/{name}.jsonl", fingerprint=hashlib.sha256(data).hexdigest(),
                 record_count=len(records) if status == DatasetStatus.READY else None, status=status)
    get_storage().write_bytes(ds.storage_key, data)
    with session_scope() as s:
        s.add(ds)
    return ds.id
