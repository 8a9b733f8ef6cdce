"""Trainer checkpoints mirrored to object storage. A checkpoint counts only once its completion
marker exists: the marker is deleted before a checkpoint is (re)uploaded and written after every one of its
files is in storage, so a checkpoint whose upload was interrupted is ignored."""

from __future__ import annotations

import re
from pathlib import Path

from weft.storage import Storage

MARKER = "COMPLETE"
STEP = re.compile(r"^checkpoint-(\d+)$")


class CheckpointStore:
    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage, self.prefix = storage, prefix.rstrip("/")

    def upload(self, local_checkpoint: Path) -> str:
        """Copy `checkpoint-N` (adapter, optimizer, scheduler, RNG, trainer state), then mark it complete."""
        key = f"{self.prefix}/{local_checkpoint.name}"
        self.storage.delete(f"{key}/{MARKER}")
        self.storage.put_dir(local_checkpoint, key)
        self.storage.write_bytes(f"{key}/{MARKER}", b"ok")
        return key

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints in storage, ascending (half-written ones are ignored)."""
        names = {entry.split("/", 1)[0] for entry in self.storage.list(self.prefix)}
        return sorted(int(m.group(1)) for n in names if (m := STEP.match(n))
                      and self.storage.exists(f"{self.prefix}/{n}/{MARKER}"))

    def download_latest(self, local_dir: Path) -> Path | None:
        """The latest complete checkpoint as a local folder (for `resume_from_checkpoint`), or None."""
        steps = self.steps()
        if not steps:
            return None
        name = f"checkpoint-{steps[-1]}"
        target = local_dir / name
        self.storage.get_dir(f"{self.prefix}/{name}", target)
        (target / MARKER).unlink(missing_ok=True)
        return target
