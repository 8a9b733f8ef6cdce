"""Object storage on a real S3 server (SeaweedFS) and on file://: all-or-nothing objects and folders,
checkpoints without their marker ignored, and `Unavailable` (fast) when the server is down."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from weft.errors import Unavailable
from weft.storage import MARKER, Storage
from weft.testing.services import SeaweedS3
from weft.training.checkpoints import CheckpointStore

MiB = 2**20
SMALL_BLOCKS = {"default_block_size": 5 * MiB}  # s3fs's minimum part size: a multipart upload beyond 5 MiB


class Exploding(io.RawIOBase):
    """A stream that fails after `chunks` reads of `size` bytes, like a dropped upload; `on_read(n)` runs
    before the n-th read."""

    def __init__(self, chunks: int = 2, size: int = 1024, on_read=None) -> None:
        self.chunks, self.size, self.on_read, self.calls = chunks, size, on_read, 0

    def read(self, n: int = -1) -> bytes:
        self.calls += 1
        if self.on_read is not None:
            self.on_read(self.calls)
        if self.calls > self.chunks:
            raise ConnectionError("client went away")
        return b"x" * self.size


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path: Path) -> Storage:
    """The same tests on both backends (S3 with 5 MiB parts, so big writes go multipart)."""
    if request.param == "file":
        return Storage((tmp_path / "bucket").as_uri())
    s3 = request.getfixturevalue("s3")
    return Storage(request.getfixturevalue("s3_bucket"), **s3.storage_options, **SMALL_BLOCKS)


@pytest.fixture(scope="module")
def own_s3() -> Iterator[SeaweedS3]:
    """A server of this module's own, for the tests that stop it."""
    with SeaweedS3() as server:
        yield server


def a_folder(root: Path, files: int = 3) -> Path:
    (root / "sub").mkdir(parents=True)
    for i in range(files):
        (root / ("sub" if i % 2 else "") / f"f{i}.bin").write_bytes(bytes([i]) * (i + 1))
    return root


def explode_on_file(monkeypatch, nth: int) -> None:
    """Make the `nth` file a write copies fail midway (its source breaks), as if the upload broke there."""
    import weft.storage

    calls = {"n": 0}
    copy = weft.storage._copy

    def failing(stream, out) -> int:
        calls["n"] += 1
        return copy(Exploding() if calls["n"] == nth else stream, out)

    monkeypatch.setattr(weft.storage, "_copy", failing)


@pytest.mark.parametrize("chunks", [2, 3], ids=["one-put", "multipart"])
def test_an_interrupted_object_write_leaves_nothing_or_the_old_object(storage: Storage, chunks: int):
    size = 4 * MiB if chunks == 3 else 1024  # 3 × 4 MiB passes the 5 MiB part size: a multipart upload began
    with pytest.raises(ConnectionError):
        storage.write_stream("datasets/a/a.jsonl", Exploding(chunks, size))
    assert not storage.exists("datasets/a/a.jsonl") and storage.list("datasets") == []
    storage.write_bytes("datasets/a/a.jsonl", b"v1")
    with pytest.raises(ConnectionError):
        storage.write_stream("datasets/a/a.jsonl", Exploding(chunks, size))
    assert storage.read_bytes("datasets/a/a.jsonl") == b"v1" and storage.list("datasets") == ["a/a.jsonl"]


def test_an_aborted_multipart_upload_is_not_left_pending(s3, s3_bucket: str):
    storage = Storage(s3_bucket, **s3.storage_options, **SMALL_BLOCKS)
    with pytest.raises(ConnectionError):
        storage.write_stream("big.bin", Exploding(3, 4 * MiB))
    uploads = storage.fs.call_s3("list_multipart_uploads", Bucket=s3_bucket.removeprefix("s3://"))
    assert uploads.get("Uploads", []) == []


def test_put_dir_is_complete_only_with_its_marker(storage: Storage, tmp_path: Path):
    src = a_folder(tmp_path / "src")
    assert storage.put_dir(src, "models/m1") == 1 + 2 + 3
    storage.write_bytes("models/m10/other.bin", b"!")  # a sibling whose name starts the same
    assert storage.complete("models/m1") and storage.list("models/m1") == ["f0.bin", "f2.bin", "sub/f1.bin"]
    with storage.local("models/m1") as folder:
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
            ["f0.bin", "f2.bin", "sub/f1.bin"]
        assert (folder / "sub" / "f1.bin").read_bytes() == b"\1\1"
    if not storage.is_local:
        assert storage.exists(f"models/m1/{MARKER}")


def test_an_interrupted_put_dir_leaves_no_complete_looking_folder(storage: Storage, tmp_path: Path, monkeypatch):
    src = a_folder(tmp_path / "src")
    storage.put_dir(src, "models/m1")  # an earlier complete copy at the same key
    explode_on_file(monkeypatch, nth=2)
    with pytest.raises(ConnectionError):
        storage.put_dir(src, "models/m1")
    assert not any(".partial-" in k for k in storage.list("models"))
    if storage.is_local:  # the new copy was staged aside: the earlier one is still there, whole
        assert storage.complete("models/m1") and storage.list("models/m1") == ["f0.bin", "f2.bin", "sub/f1.bin"]
    else:  # replaced in place: the earlier copy is gone, and the half-written files with it
        assert not storage.complete("models/m1") and storage.list("models") == []
        with pytest.raises(FileNotFoundError):
            storage.get_dir("models/m1", tmp_path / "copy")
    monkeypatch.undo()
    assert storage.put_dir(src, "models/m1") == 6 and storage.complete("models/m1")  # a retry just works


def test_an_incomplete_s3_folder_is_refused_by_readers(s3, s3_bucket: str, tmp_path: Path):
    """A folder whose upload died (files without the marker, e.g. the process was killed) is never trusted."""
    storage = Storage(s3_bucket, **s3.storage_options)
    storage.write_bytes("staging/wf/model/config.json", b"{}")
    assert storage.exists("staging/wf/model") and not storage.complete("staging/wf/model")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        storage.get_dir("staging/wf/model", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="incomplete"), storage.local("staging/wf/model"):
        pass
    with pytest.raises(FileNotFoundError, match="incomplete"):
        storage.move("staging/wf/model", "models/m1")
    assert not storage.exists("models/m1")


def test_move_replaces_the_destination_and_an_interrupted_move_can_be_rerun(storage: Storage, tmp_path: Path):
    src = a_folder(tmp_path / "src")
    storage.put_dir(src, "staging/wf/model")
    storage.write_bytes("models/m1/old.txt", b"stale")
    storage.move("staging/wf/model", "models/m1")
    assert storage.complete("models/m1") and not storage.exists("staging/wf/model")
    assert storage.list("models/m1") == ["f0.bin", "f2.bin", "sub/f1.bin"]
    if not storage.is_local:  # a move cut short while removing its source: some source files, no marker
        storage.write_bytes("staging/wf/model/f2.bin", b"\2\2\2")
        storage.move("staging/wf/model", "models/m1")
        assert not storage.exists("staging/wf/model") and storage.complete("models/m1")
        assert storage.list("models/m1") == ["f0.bin", "f2.bin", "sub/f1.bin"]
    with pytest.raises(FileNotFoundError):
        storage.move("staging/gone", "models/m1")
    assert storage.complete("models/m1")  # a failed move does not touch the destination
    storage.write_bytes("runs/one.txt", b"1")
    storage.move("runs/one.txt", "runs/two.txt")
    assert storage.read_bytes("runs/two.txt") == b"1" and not storage.exists("runs/one.txt")


def test_put_stream_dir_replaces_the_folder_with_one_file(storage: Storage):
    storage.write_bytes("staging/wf/model/left-over.bin", b"old")
    assert storage.put_stream_dir("staging/wf/model", "w.gguf", io.BytesIO(b"gguf")) == 4
    assert storage.complete("staging/wf/model") and storage.list("staging/wf/model") == ["w.gguf"]
    with pytest.raises(ConnectionError):
        storage.put_stream_dir("staging/wf/model", "w.gguf", Exploding())
    if storage.is_local:  # staged aside: the earlier folder stays whole
        assert storage.read_bytes("staging/wf/model/w.gguf") == b"gguf"
    else:
        assert not storage.complete("staging/wf/model") and not storage.exists("staging/wf/model")


def test_a_checkpoint_without_its_marker_is_ignored(storage: Storage, tmp_path: Path, monkeypatch):
    store = CheckpointStore(storage, "runs/job/checkpoints")
    for step in (2, 4, 6):
        a_folder(tmp_path / f"checkpoint-{step}")
    store.upload(tmp_path / "checkpoint-2")
    explode_on_file(monkeypatch, nth=2)
    with pytest.raises(ConnectionError):
        store.upload(tmp_path / "checkpoint-4")  # the upload breaks midway
    monkeypatch.undo()
    storage.put_dir(tmp_path / "checkpoint-6", "runs/job/checkpoints/checkpoint-6")  # killed before its marker
    assert store.steps() == [2]
    latest = store.download_latest(tmp_path / "resume")
    assert latest.name == "checkpoint-2" and sorted(p.name for p in latest.rglob("*") if p.is_file()) == \
        ["f0.bin", "f1.bin", "f2.bin"]


def test_write_splits_writes_both_files_or_neither(storage: Storage, tmp_path: Path, monkeypatch):
    from weft.datasets.splits import write_splits

    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"text": "r{i}"}}\n' for i in range(50)))
    splits = write_splits(data, "jsonl", storage, "datasets/d/splits", 0.2, seed=1)
    assert splits.train_records + splits.validation_records == 50 and storage.complete("datasets/d/splits")
    assert storage.list("datasets/d/splits") == ["train.jsonl", "validation.jsonl"]
    explode_on_file(monkeypatch, nth=2)
    with pytest.raises(ConnectionError):
        write_splits(data, "jsonl", storage, "datasets/d/splits", 0.5, seed=2)
    if storage.is_local:  # the earlier pair stays whole
        assert sum(len(storage.read_bytes(k).splitlines()) for k in (splits.train_key, splits.validation_key)) == 50
    else:
        assert not storage.complete("datasets/d/splits") and storage.list("datasets/d/splits") == []


def test_a_stopped_server_raises_unavailable_quickly(own_s3: SeaweedS3, tmp_path: Path):
    storage = Storage(own_s3.make_bucket("down"), **own_s3.storage_options)
    storage.write_bytes("datasets/a/a.jsonl", b"{}\n")
    storage.put_dir(a_folder(tmp_path / "src"), "models/m1")
    own_s3.stop()
    try:
        calls = {"exists": lambda: storage.exists("datasets/a/a.jsonl"),
                 "read_bytes": lambda: storage.read_bytes("datasets/a/a.jsonl"),
                 "write_stream": lambda: storage.write_stream("datasets/b/b.jsonl", io.BytesIO(b"{}\n")),
                 "put_dir": lambda: storage.put_dir(tmp_path / "src", "models/m2"),
                 "list": lambda: storage.list("models"),
                 "local": lambda: storage.local("models/m1").__enter__(),
                 "delete": lambda: storage.delete("models/m1")}
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(Unavailable, match="^object storage is unavailable: ") as info:
                call()
            elapsed = time.monotonic() - started
            assert elapsed < 15, f"{name} took {elapsed:.1f} s to fail"
            assert info.value.code == "SERVICE_UNAVAILABLE" and info.value.details == {"storage": "s3://down"}
    finally:
        own_s3.start()
    assert storage.read_bytes("datasets/a/a.jsonl") == b"{}\n" and storage.complete("models/m1")
    assert not storage.exists("datasets/b/b.jsonl") and not storage.exists("models/m2")


def test_the_server_dying_mid_upload_leaves_nothing(own_s3: SeaweedS3):
    storage = Storage(own_s3.make_bucket("dies"), **own_s3.storage_options, **SMALL_BLOCKS)

    def stop_after_the_first_part(n: int) -> None:
        if n == 3:  # 8 MiB read: the first 5 MiB part is on the server
            own_s3.stop()

    try:
        with pytest.raises(Unavailable):
            storage.write_stream("datasets/a/a.jsonl", Exploding(chunks=6, size=4 * MiB, on_read=stop_after_the_first_part))
    finally:
        own_s3.start()
    assert not storage.exists("datasets/a/a.jsonl") and storage.list("datasets") == []
