"""Register weft's work pools and the deployments of prefect.yaml on a Prefect server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

PROJECT_DIR = Path(__file__).resolve().parent.parent
POOLS = {"cpu": None, "gpu": 1}  # pool -> concurrency limit (GPU slots); None = unlimited


def prefect_cli() -> str:
    """The `prefect` executable of this environment."""
    local = Path(sys.executable).with_name("prefect")
    return str(local) if local.exists() else (shutil.which("prefect") or "prefect")


def ensure_work_pools() -> None:
    """Create the `cpu` and `gpu` process work pools if they do not exist."""
    with get_client(sync_client=True) as client:
        for name, limit in POOLS.items():
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process", concurrency_limit=limit))
            except ObjectAlreadyExists:
                pass


def register_deployments(project_dir: Path = PROJECT_DIR, env: dict[str, str] | None = None) -> None:
    """`prefect deploy --all` over prefect.yaml (the flows are loaded from `project_dir`)."""
    run_env = {**os.environ, **(env or {}), "WEFT_PROJECT_DIR": str(project_dir)}
    result = subprocess.run([prefect_cli(), "--no-prompt", "deploy", "--all"], cwd=project_dir, env=run_env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


if __name__ == "__main__":
    ensure_work_pools()
    register_deployments()
    print("work pools and deployments registered")
