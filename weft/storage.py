"""Object storage through fsspec: `file://` under the data dir by default, `s3://` through s3fs.

Writes are all-or-nothing. An object appears only once complete: on file:// a temporary file is renamed into
place; on S3 it is one PUT or a multipart upload completed at close, aborted (`discard`) on error. A folder
(`put_dir`, `put_stream_dir`, `move`) is renamed into place on file://; on S3, where nothing spans several
objects atomically, its files go straight to their keys and a `.weft-complete` marker is written last and
deleted first: `complete()` tells, `get_dir`/`local` refuse a folder without it and `move` never copies one.
Unreachable object storage raises `weft.errors.Unavailable` (HTTP 503) after a few seconds, not minutes.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from fsspec.core import url_to_fs
from fsspec.exceptions import FSTimeoutError

from weft.errors import Unavailable
from weft.settings import get_settings

CHUNK = 8 * 1024 * 1024
MARKER = ".weft-complete"  # the last object of a folder written on S3; hidden by list() and get_dir()
# s3fs defaults that fail fast when the server is down (storage_options override them key by key); no listing
# cache, because the API and the workers write the same bucket from different processes
S3_DEFAULTS: dict[str, Any] = {
    "use_listings_cache": False,
    # s3v4: presigned URLs signed with SigV4 (botocore presigns with the deprecated SigV2 otherwise)
    "config_kwargs": {"connect_timeout": 3, "read_timeout": 20, "retries": {"max_attempts": 2, "mode": "standard"},
                      "signature_version": "s3v4"},
}
S3_RETRIES = 2  # s3fs's own retries of read timeouts and dropped connections (5 by default)

F = TypeVar("F", bound=Callable[..., Any])
Opener = Callable[[], AbstractContextManager[BinaryIO]]


def _merged(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for k, v in overrides.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "cannot talk to the storage server" (only from modules already loaded:
    a botocore error cannot have been raised if botocore was never imported)."""
    errors: list[type[BaseException]] = [FSTimeoutError]
    if (boto := sys.modules.get("botocore.exceptions")) is not None:
        errors += [boto.ConnectionError, boto.HTTPClientError]  # refused, timeouts, dropped connections
    if (aiohttp := sys.modules.get("aiohttp")) is not None:
        errors.append(aiohttp.ClientConnectionError)
    return tuple(errors)


def _guarded(method: F) -> F:
    """Turn connection failures of the storage server into `Unavailable`."""

    @functools.wraps(method)
    def wrapper(self: Storage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Unavailable:
            raise
        except Exception as exc:
            if isinstance(exc, _unreachable_errors()):
                raise Unavailable(f"object storage is unavailable: {exc}", {"storage": self.root}) from exc
            raise

    return wrapper  # type: ignore[return-value]


def _copy(stream: BinaryIO, out: BinaryIO) -> int:
    written = 0
    while chunk := stream.read(CHUNK):
        out.write(chunk)
        written += len(chunk)
    return written


def _discard(f: Any) -> None:
    """Abandon an S3 upload: abort its multipart upload (best effort: an unfinished one never becomes an
    object) and mark the file closed, so neither `close()` nor `__del__` commits what was buffered."""
    with suppress(Exception):
        f.discard()
    f.closed = True


class Storage:
    """A bucket-like root; keys are `/`-separated paths below it."""

    def __init__(self, root: str | None = None, **options) -> None:
        settings = get_settings()
        self.root = (root or settings.storage_root).rstrip("/")
        options = options or settings.storage_options
        is_s3 = self.root.split("://", 1)[0] in ("s3", "s3a")
        self.fs, self.base = url_to_fs(self.root, **(_merged(S3_DEFAULTS, options) if is_s3 else options))
        self.is_local = "file" in self.fs.protocol
        if self.is_local:
            self.fs.makedirs(self.base, exist_ok=True)
        if is_s3:
            self.fs.retries = S3_RETRIES  # not a constructor option of s3fs

    def path(self, key: str) -> str:
        return f"{self.base}/{key.strip('/')}"

    def url(self, key: str) -> str:
        return f"{self.root}/{key.strip('/')}"

    def key_of(self, url: str) -> str:
        """The key of a URL under this root (the inverse of `url`)."""
        if not url.startswith(self.root + "/"):
            raise ValueError(f"{url} is not in this storage ({self.root})")
        return url[len(self.root) + 1 :]

    @_guarded
    def exists(self, key: str) -> bool:
        """An object at `key`, or objects below it (on S3 not an empty directory entry, which SeaweedFS keeps)."""
        path = self.path(key)
        if self.is_local or not key.strip("/"):
            return self.fs.exists(path)
        try:
            if self.fs.info(path)["type"] == "file":
                return True
        except FileNotFoundError:
            return False
        bucket, prefix, _ = self.fs.split_path(path)
        listing = self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{prefix.rstrip('/')}/", MaxKeys=1)
        return bool(listing.get("Contents"))

    @_guarded
    def complete(self, key: str) -> bool:
        """Whether the folder `key` is there in full (written by `put_dir`, `put_stream_dir` or `move`)."""
        if self.is_local:
            return self.fs.isdir(self.path(key))  # folders arrive by rename
        return self.fs.exists(f"{self.path(key)}/{MARKER}")

    @_guarded
    def write_stream(self, key: str, stream: BinaryIO) -> int:
        """Copy a stream to `key` in chunks; the object appears only when complete, and a failure (of the
        stream or of storage) leaves what was there before."""
        path = self.path(key)
        if self.is_local:
            tmp = f"{path}.partial-{uuid.uuid4().hex[:8]}"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                with open(tmp, "wb") as out:
                    written = _copy(stream, out)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return written
        out = self.fs.open(path, "wb")  # not `with`: fsspec's __exit__ would commit a partial object
        try:
            written = _copy(stream, out)
            out.close()
        except BaseException:
            _discard(out)
            raise
        return written

    def write_bytes(self, key: str, data: bytes) -> None:
        self.write_stream(key, io.BytesIO(data))

    @_guarded
    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def put_dir(self, local_dir: Path, key: str) -> int:
        """Upload a local folder to `key/`, replacing it, all or nothing (see the module docstring)."""
        local_dir = Path(local_dir)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        return self._put_folder(key, [(f.relative_to(local_dir).as_posix(), functools.partial(f.open, "rb"))
                                      for f in files])

    def put_stream_dir(self, key: str, name: str, stream: BinaryIO) -> int:
        """Replace the folder `key/` by one file `name` read from `stream`, all or nothing like `put_dir`."""
        return self._put_folder(key, [(name, lambda: nullcontext(stream))])

    @_guarded
    def _put_folder(self, key: str, files: list[tuple[str, Opener]]) -> int:
        key = key.strip("/")
        if self.is_local:
            tmp = f"{key}.partial-{uuid.uuid4().hex[:8]}"
            staged = Path(self.path(tmp))
            staged.mkdir(parents=True)
            try:
                total = 0
                for rel, opener in files:
                    (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                    with opener() as src, (staged / rel).open("wb") as out:
                        total += _copy(src, out)
                self.move(tmp, key)
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
            return total
        self.delete(key)  # its marker first: from here on readers see it incomplete
        written: dict[str, int] = {}
        try:
            for rel, opener in files:
                with opener() as src:
                    written[rel] = self.write_stream(f"{key}/{rel}", src)
            self.write_bytes(f"{key}/{MARKER}", json.dumps({"files": written}, sort_keys=True).encode())
        except BaseException:
            with suppress(Exception):  # best effort; without the marker the rest is never trusted anyway
                self.delete(key)
            raise
        return sum(written.values())

    @_guarded
    def move(self, src: str, dst: str) -> None:
        """Move a file or folder, replacing what is at `dst`. On S3 a folder is copied with its marker last,
        then removed with its marker first, so an interrupted move can simply be run again: a source left
        without its marker next to a complete `dst` is cleaned up; an incomplete one is refused."""
        s, d = self.path(src), self.path(dst)
        if not self.exists(src):
            raise FileNotFoundError(f"{self.url(src)} does not exist")
        if self.is_local:
            self.delete(dst)
            os.makedirs(os.path.dirname(d), exist_ok=True)
            os.rename(s, d)
        elif self.fs.info(s)["type"] == "file":
            self.fs.copy(s, d)  # one object: a server-side copy, atomic
            self.fs.rm_file(s)
        elif self.complete(src):
            self.delete(dst)
            names = [n for n in self._files(src) if n != MARKER]
            if names:
                self.fs.copy([f"{s}/{n}" for n in names], [f"{d}/{n}" for n in names])
            self.fs.copy(f"{s}/{MARKER}", f"{d}/{MARKER}")
            self.delete(src)
        elif self.complete(dst):
            self.delete(src)  # the leftovers of a move interrupted while removing its source
        else:
            raise FileNotFoundError(f"{self.url(src)} is incomplete (no {MARKER}): its upload was interrupted")

    @_guarded
    def get_dir(self, key: str, local_dir: Path) -> Path:
        """Download the complete folder `key` (without its marker); FileNotFoundError if it is incomplete."""
        local_dir.mkdir(parents=True, exist_ok=True)
        if self.is_local:
            self.fs.get(self.path(key).rstrip("/") + "/", str(local_dir), recursive=True)
            return local_dir
        if not self.complete(key):
            raise FileNotFoundError(f"{self.url(key)} is missing or incomplete (no {MARKER}: still being written, "
                                    "or its upload was interrupted)")
        names = [n for n in self._files(key) if Path(n).name != MARKER]
        if names:
            base = self.path(key).rstrip("/")
            self.fs.get([f"{base}/{n}" for n in names], [str(local_dir / n) for n in names])
        return local_dir

    def _files(self, key: str) -> list[str]:
        """Relative paths of the objects below `key` (not the directory entries some S3 servers keep)."""
        base = self.path(key).rstrip("/")
        return sorted(p[len(base) + 1 :] for p, info in self.fs.find(base, detail=True).items()
                      if info["type"] == "file" and p.startswith(f"{base}/"))

    @_guarded
    def objects(self, key: str) -> dict[str, tuple[str, int]]:
        """The files of the folder `key` as relative path → (object key, bytes), markers left out; `key` itself
        under its own name when it is one object; empty when nothing is there."""
        path, key = self.path(key).rstrip("/"), key.strip("/")
        if not self.exists(key):
            return {}
        info = self.fs.info(path)
        if info["type"] == "file":
            return {key.rsplit("/", 1)[-1]: (key, int(info["size"]))}
        return {(rel := p[len(path) + 1 :]): (f"{key}/{rel}", int(i["size"]))
                for p, i in sorted(self.fs.find(path, detail=True).items())
                if i["type"] == "file" and p.startswith(f"{path}/") and p.rsplit("/", 1)[-1] != MARKER}

    @_guarded
    def open_read(self, key: str) -> BinaryIO:
        """The object at `key` opened for streaming reads (ranged GETs on S3, never a full download)."""
        return self.fs.open(self.path(key), "rb", block_size=CHUNK)

    @_guarded
    def presign(self, key: str, seconds: int) -> str:
        """A URL that reads the object at `key` without credentials for `seconds` (S3's presigned GET)."""
        if self.is_local:
            raise ValueError("file:// storage has no presigned URLs: the API signs its own (weft.registry.links)")
        return self.fs.sign(self.path(key), expiration=seconds)

    @_guarded
    def list(self, key: str) -> list[str]:
        """Files below `key` (relative paths), completion markers left out."""
        if not self.exists(key):
            return []
        return [n for n in self._files(key) if n.rsplit("/", 1)[-1] != MARKER]

    @contextmanager
    def local(self, key: str) -> Iterator[Path]:
        """`key` (a file or a complete folder) as a local path: in place for file://, else a temporary download."""
        path = self.local_path(key)
        if path is not None:
            yield path
            return
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(key).name
            self._download(key, target)
            yield target

    @_guarded
    def _download(self, key: str, target: Path) -> None:
        if self.fs.info(self.path(key))["type"] == "directory":
            self.get_dir(key, target)
        else:
            self.fs.get(self.path(key), str(target))

    def local_path(self, key: str) -> Path | None:
        """The on-disk path for `file://` storage (lets loaders read in place), else None."""
        return Path(self.path(key)) if self.is_local else None

    @_guarded
    def delete(self, key: str) -> None:
        """Remove a file or folder; on S3 the completion markers go first, so nothing looks complete meanwhile."""
        path = self.path(key)
        if not self.exists(key):
            return
        if not self.is_local and (markers := [p for p in self.fs.find(path) if p.rsplit("/", 1)[-1] == MARKER]):
            self.fs.rm(markers)
        self.fs.rm(path, recursive=True)


def get_storage() -> Storage:
    return Storage()
