"""What every weft task shares: the resumable-step cache policy and the workflow context."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from prefect.utilities.hashing import hash_objects

from weft.settings import get_settings


def current_workflow_id() -> str:
    """The workflow this flow run belongs to (the flow run id when started outside the API)."""
    params = flow_run.parameters or {}
    return str(params.get("workflow_id") or flow_run.id)


def step_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key (workflow id, step, input fingerprint): a new run of the same workflow skips
    finished steps; `cache_version` (bumped when a cancelled workflow is cleaned up) starts over."""
    version = (flow_run.parameters or {}).get("cache_version", 0)
    fingerprint = hash_objects(parameters) or "unhashable"
    return f"weft-{current_workflow_id()}-v{version}-{context.task.name}-{fingerprint}"


def wait_for_dataset(dataset_id: str) -> None:
    """A workflow's first step on a dataset: wait (logging why) until its upload validation passed."""
    from weft.datasets.uploads import wait_until_validated

    wait_until_validated(dataset_id, on_wait=lambda timeout: get_run_logger().info(
        "dataset %s is still being validated: waiting up to %.0f s", dataset_id, timeout))


def step_options(name: str, **extra: Any) -> dict[str, Any]:
    """`@task(**step_options("fetch_model"))`: a resumable, persisted, named workflow step."""
    return {
        "name": name,
        "cache_key_fn": step_cache_key,
        "persist_result": True,
        "result_storage": get_settings().result_storage_block,
        **extra,
    }
