"""Start one replica of a classic model: its uv environment (built here when this machine has not got it
yet), a private working folder holding a copy of the model file, and the classic-model server of
`runtime/server.py` in the sandbox, under the deployment's memory limit and per-prediction timeout."""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from weft.classic import envs, sandbox
from weft.settings import get_settings


def start(stack: ExitStack, details: dict[str, Any], config: dict[str, Any], host: str, port: int,
          log_file: Path) -> subprocess.Popen:
    """The server process (it dies with this one); the working folder goes when `stack` closes."""
    workers = get_settings().classic_workers
    env = envs.ensure_env(details["requirements"])
    model_path = stack.enter_context(sandbox.workdir(details["file_key"], details["file_name"]))
    args = sandbox.runtime_args("server.py", model_path, details["framework"], bool(details.get("unsafe_keras")),
                                "--host", host, "--port", str(port), "--timeout", str(config["timeout_seconds"]),
                                "--workers", str(workers))
    return sandbox.popen(env.path, model_path.parent, args, memory_mb=int(config["memory_mb"]), log_file=log_file)
