"""Guard for the `disk` provider: a path must resolve (symlinks followed) inside WEFT_DISK_ROOTS."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from weft.settings import get_settings


class DiskPathError(ValueError):
    pass


def resolve_disk_uri(uri: str) -> Path:
    """A model's local folder or `.gguf` file (see `resolve_disk_path`)."""
    resolved = resolve_disk_path(uri)
    if resolved.is_file() and resolved.suffix != ".gguf":
        raise DiskPathError(f"a single-file model must be a .gguf file: {resolved}")
    return resolved


def resolve_disk_path(uri: str) -> Path:
    """Resolve a local path or `file://` URI; refuse what is missing or outside the allowed roots."""
    raw = urlparse(uri).path if uri.startswith("file://") else uri
    if not raw:
        raise DiskPathError("disk uri is empty")
    if ".." in Path(raw).parts:
        raise DiskPathError(f"disk uri must not contain '..': {uri}")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise DiskPathError(f"disk uri must be an absolute path: {uri}")
    resolved = path.resolve()
    roots = get_settings().allowed_disk_roots
    if not any(resolved == r or r in resolved.parents for r in roots):
        raise DiskPathError(f"{resolved} is outside the allowed disk roots ({', '.join(map(str, roots))})")
    if not resolved.exists():
        raise DiskPathError(f"path does not exist: {resolved}")
    return resolved
