"""Dataset upload on S3 storage (a SeaweedFS server of this module's own, since the tests stop it): a 503
SERVICE_UNAVAILABLE when S3 is down or dies mid-upload, with nothing stored and no dataset row left."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlmodel import select

from weft.datasets import uploads
from weft.db import session_scope
from weft.settings import get_settings
from weft.storage import Storage
from weft.tables import Dataset
from weft.testing.services import SeaweedS3

MiB = 2**20


@pytest.fixture(scope="module")
def own_s3() -> Iterator[SeaweedS3]:
    with SeaweedS3() as server:
        yield server


@pytest.fixture
def bucket(own_s3: SeaweedS3, monkeypatch) -> Storage:
    """Point the API's storage at a fresh bucket (5 MiB parts: bigger uploads go multipart)."""
    url = own_s3.make_bucket(f"uploads-{uuid.uuid4().hex[:8]}")
    options = {**own_s3.storage_options, "default_block_size": 5 * MiB}
    monkeypatch.setattr(get_settings(), "storage_url", url)
    monkeypatch.setattr(get_settings(), "storage_options", options)
    return Storage(url, **options)


def upload(client, headers: dict[str, str], name: str, content: bytes):
    return client.post("/api/v1/datasets/upload", headers=headers, data={"name": name},
                       files={"file": ("records.jsonl", io.BytesIO(content), "application/octet-stream")})


def rows_named(name: str) -> list[Dataset]:
    with session_scope() as s:
        return list(s.exec(select(Dataset).where(Dataset.name == name)).all())


def test_an_upload_lands_in_s3_and_is_validated(client, auth_headers, bucket: Storage):
    headers = auth_headers()
    r = upload(client, headers, "on-s3", b'{"text": "a"}\n{"text": "b"}\n')
    assert r.status_code == 201, r.text
    ds = client.get(f"/api/v1/datasets/{r.json()['id']}", headers=headers).json()
    assert ds["status"] == "ready" and ds["record_count"] == 2 and ds["file_path"].startswith("s3://")
    assert bucket.list("datasets") == [f"{ds['id']}/{ds['id']}.jsonl"]


def test_an_upload_while_s3_is_down_is_a_503_and_leaves_no_row(client, auth_headers, bucket: Storage,
                                                               own_s3: SeaweedS3):
    headers = auth_headers()
    name = f"down-{uuid.uuid4().hex[:6]}"
    own_s3.stop()
    try:
        started = time.monotonic()
        r = upload(client, headers, name, b'{"text": "a"}\n')
        elapsed = time.monotonic() - started
    finally:
        own_s3.start()
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert r.json()["error"]["message"].startswith("object storage is unavailable")
    assert elapsed < 30, f"the 503 took {elapsed:.1f} s"
    assert rows_named(name) == [] and client.get("/api/v1/datasets", headers=headers).json()["data"] == []
    assert bucket.list("datasets") == []


def test_s3_dying_mid_upload_is_a_503_with_nothing_stored(client, auth_headers, bucket: Storage,
                                                          own_s3: SeaweedS3, monkeypatch):
    headers = auth_headers()
    name = f"dies-{uuid.uuid4().hex[:6]}"
    read, calls = uploads.CappedReader.read, {"n": 0}

    def read_then_die(self, n: int = -1) -> bytes:
        calls["n"] += 1
        if calls["n"] == 2:  # the first 8 MiB went out as a multipart upload part
            own_s3.stop()
        return read(self, n)

    monkeypatch.setattr(uploads.CappedReader, "read", read_then_die)
    try:
        r = upload(client, headers, name, b'{"text": "%s"}\n' % (b"x" * 1000) * (20 * 1024))  # ~20 MiB
    finally:
        own_s3.start()
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE" and calls["n"] >= 2
    assert rows_named(name) == [] and bucket.list("datasets") == []
