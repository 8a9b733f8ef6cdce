"""Register weft's work pools, its result-storage block and the deployments of prefect.yaml on the
Prefect server of `PREFECT_API_URL` (`python -m deployments.register`; `weft up` runs it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from blocks.storage import save_result_storage
from deployments.automations import ensure_crash_detection
from weft import pools
from weft.platform import prefect_cli
from weft.serving import controller as endpoint_controller
from weft.settings import get_settings

PROJECT_DIR = Path(__file__).resolve().parent.parent


def ensure_work_pools() -> None:
    """Create the `cpu` and `gpu` process work pools if they do not exist."""
    with get_client(sync_client=True) as client:
        for name, limit in pools.CONCURRENCY.items():
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


def main() -> None:
    """Pools, the result-storage block, the crash-detection automation, every deployment, and a run of
    the endpoint controller, in that order."""
    ensure_work_pools()
    save_result_storage()
    ensure_crash_detection(get_settings().crash_after_seconds)
    register_deployments()
    controller = endpoint_controller.start()
    print(f"work pools, result storage, crash detection and deployments registered; endpoint controller {controller}")


if __name__ == "__main__":
    main()
