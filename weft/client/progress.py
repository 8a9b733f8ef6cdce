"""Progress bars for uploads and downloads (rich), off when not wanted or not on a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol


class Advance(Protocol):
    def __call__(self, n: int) -> None: ...


@contextmanager
def bar(description: str, total: int | None, show: bool) -> Iterator[Advance]:
    """A callable that advances a transfer bar by `n` bytes (a no-op when `show` is false)."""
    if not show:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


class CountingReader:
    """A file object whose reads advance a progress bar (httpx reads multipart files in chunks)."""

    def __init__(self, file: IO[bytes], advance: Advance) -> None:
        self.file, self.advance = file, advance

    def read(self, size: int = -1) -> bytes:
        chunk = self.file.read(size)
        self.advance(len(chunk))
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)
