"""A ZIP archive streamed while it is built: constant memory in the size of what it holds.

The standard library's `zipfile` writes to an unseekable stream with data descriptors (and ZIP64 for large
members), so each chunk it writes can be handed to the HTTP response as soon as it exists.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1024 * 1024
# already-compressed or incompressible weights are stored; text is deflated
STORED_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".png", ".zip")


@dataclass(frozen=True)
class Member:
    """One file of the archive: its name inside it and how to open its bytes."""

    name: str
    open: Callable[[], AbstractContextManager[BinaryIO]]
    size: int | None = None  # when known, ZIP64 is used only where needed


class _Sink:
    """A write-only, unseekable file whose writes are collected until the generator hands them out."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:  # zipfile records member offsets with it; seek is never called
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def stream_zip(members: Iterable[Member]) -> Iterator[bytes]:
    """The ZIP of `members`, yielded in chunks of about `CHUNK` bytes as it is written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:  # type: ignore[arg-type]
        for member in members:
            stored = member.name.lower().endswith(STORED_SUFFIXES)
            info = zipfile.ZipInfo(member.name)
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            big = member.size is None or member.size >= zipfile.ZIP64_LIMIT
            with member.open() as src, archive.open(info, "w", force_zip64=big) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    if sink.chunks:
                        yield sink.drain()
            if data := sink.drain():
                yield data
    if data := sink.drain():
        yield data
