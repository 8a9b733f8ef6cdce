"""Start one replica of a classic model: its uv environment (built here when this machine has not got it
yet), a private working folder holding a copy of the model file, and the classic-model server of
`runtime/server.py` in the sandbox, under the revision's memory limit and per-prediction timeout."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from weft.classic import envs, sandbox
from weft.settings import get_settings
from weft.storage import get_storage


def start(stack: ExitStack, details: dict[str, Any], config: dict[str, Any], host: str, port: int,
          log_file: Path) -> subprocess.Popen:
    """The server process (it dies with this one); the working folder goes when `stack` closes."""
    settings = get_settings()
    env = envs.ensure_env(details["requirements"])
    root = settings.home_dir / "sandboxes"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root))
    stack.callback(shutil.rmtree, work, True)
    with get_storage().local(details["file_key"]) as path:
        model_path = Path(shutil.copy(path, work / details["file_name"]))
    args = [sandbox.script("server.py"), "--model", str(model_path), "--framework", details["framework"],
            "--host", host, "--port", str(port), "--timeout", str(config.get("timeout_seconds", 30)),
            "--workers", str(settings.classic_workers), *(["--unsafe-keras"] if details.get("unsafe_keras") else [])]
    return sandbox.popen(env.path, work, args, memory_mb=int(config.get("memory_mb", 1024)), log_file=log_file)
