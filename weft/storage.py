"""Object storage through fsspec: `file://` under the data dir by default, `s3://` through s3fs."""

from __future__ import annotations

import io
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from fsspec.core import url_to_fs

from weft.settings import get_settings

CHUNK = 8 * 1024 * 1024


class Storage:
    """A bucket-like root; keys are `/`-separated paths below it."""

    def __init__(self, root: str | None = None, **options) -> None:
        settings = get_settings()
        self.root = (root or settings.storage_root).rstrip("/")
        self.fs, self.base = url_to_fs(self.root, **(options or settings.storage_options))
        if "file" in self.fs.protocol:
            self.fs.makedirs(self.base, exist_ok=True)

    def path(self, key: str) -> str:
        return f"{self.base}/{key.strip('/')}"

    def url(self, key: str) -> str:
        return f"{self.root}/{key.strip('/')}"

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def write_stream(self, key: str, stream: BinaryIO) -> int:
        """Copy a stream to `key` in chunks; the object appears only when complete."""
        tmp = self.path(f"{key}.partial-{uuid.uuid4().hex[:8]}")
        written = 0
        self.fs.makedirs(tmp.rsplit("/", 1)[0], exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as out:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
            self.fs.mv(tmp, self.path(key))
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise
        return written

    def write_bytes(self, key: str, data: bytes) -> None:
        self.write_stream(key, io.BytesIO(data))

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def put_dir(self, local_dir: Path, key: str) -> int:
        """Upload a local folder to `key/` atomically: staged under a temp prefix, then moved."""
        tmp = f"{key.rstrip('/')}.partial-{uuid.uuid4().hex[:8]}"
        total = 0
        try:
            for file in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
                rel = file.relative_to(local_dir).as_posix()
                with file.open("rb") as fh:
                    total += self.write_stream(f"{tmp}/{rel}", fh)
            self.move(tmp, key)
        except BaseException:
            self.delete(tmp)
            raise
        return total

    def move(self, src: str, dst: str) -> None:
        """Move a file or folder, replacing what is at `dst`."""
        self.delete(dst)
        self.fs.makedirs(self.path(dst).rsplit("/", 1)[0], exist_ok=True)
        self.fs.mv(self.path(src), self.path(dst), recursive=True)

    def get_dir(self, key: str, local_dir: Path) -> Path:
        local_dir.mkdir(parents=True, exist_ok=True)
        self.fs.get(self.path(key).rstrip("/") + "/", str(local_dir), recursive=True)
        return local_dir

    def list(self, key: str) -> list[str]:
        if not self.exists(key):
            return []
        base = self.path(key).rstrip("/")
        return sorted(p[len(base) + 1 :] for p in self.fs.find(base))

    @contextmanager
    def local(self, key: str) -> Iterator[Path]:
        """`key` (a file or a folder) as a local path: in place for file://, else a temporary download."""
        path = self.local_path(key)
        if path is not None:
            yield path
            return
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(key).name
            if self.fs.isdir(self.path(key)):
                self.get_dir(key, target)
            else:
                self.fs.get(self.path(key), str(target))
            yield target

    def local_path(self, key: str) -> Path | None:
        """The on-disk path for `file://` storage (lets loaders read in place), else None."""
        return Path(self.path(key)) if "file" in self.fs.protocol else None

    def delete(self, key: str) -> None:
        if self.exists(key):
            self.fs.rm(self.path(key), recursive=True)


def get_storage() -> Storage:
    return Storage()

