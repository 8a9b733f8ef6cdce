"""Where `weft login` keeps the API URL and key: `$XDG_CONFIG_HOME/weft/config.json` (default
`~/.config/weft/config.json`), readable by its owner only."""

from __future__ import annotations

import json
import os
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
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps({"api_url": api_url, "api_key": api_key}, indent=2))
    return path
