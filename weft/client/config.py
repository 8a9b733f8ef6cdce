"""Where `weft login` keeps the API URL and key: `$XDG_CONFIG_HOME/weft/config.json` (default
`~/.config/weft/config.json`), readable by its owner only."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "weft" / "config.json"


def saved() -> dict[str, str]:
    """The saved settings (`api_url`, `api_key`), or {} when there are none."""
    try:
        return json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}


def save(api_url: str, api_key: str) -> Path:
    """Write the settings whole (a temporary file renamed over the old one), readable by the owner only."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-")  # created 0600
    with os.fdopen(fd, "w") as out:
        json.dump({"api_url": api_url, "api_key": api_key}, out, indent=2)
    os.replace(temporary, path)
    return path
