"""Object storage: atomic writes, folder upload and move over fsspec (file:// here, s3:// in production)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from weft.storage import Storage


class Exploding(io.RawIOBase):
    """A stream that fails after a few chunks, like a dropped upload."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 2:
            raise ConnectionError("client went away")
        return b"x" * 1024


def test_a_failed_write_leaves_nothing(tmp_path: Path):
    storage = Storage(tmp_path.as_uri())
    with pytest.raises(ConnectionError):
        storage.write_stream("datasets/a.jsonl", Exploding())
    assert storage.list("datasets") == []


def test_put_dir_move_and_delete(tmp_path: Path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\0" * 10)
    storage = Storage((tmp_path / "bucket").as_uri())
    assert storage.put_dir(src, "staging/wf/model") == 12
    assert storage.list("staging/wf/model") == ["config.json", "sub/w.bin"]
    storage.write_bytes("models/m1/old.txt", b"stale")
    storage.move("staging/wf/model", "models/m1")
    assert storage.list("models/m1") == ["config.json", "sub/w.bin"] and not storage.exists("staging/wf/model")
    assert storage.read_bytes("models/m1/config.json") == b"{}"
    assert storage.url("models/m1").startswith("file://")
    storage.delete("models")
    assert not storage.exists("models/m1")
