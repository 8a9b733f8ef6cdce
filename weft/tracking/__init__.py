"""Experiment tracking of training runs (document 003's `experiment_tracker`). weft logs to MLflow
(`weft.tracking.mlflow_runs`); a tracker weft cannot log to is refused when the job is created."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# MLflow 3 starts a usage-reporting client when imported unless told not to (DO_NOT_TRACK must be "true", not "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TRACKERS = ("mlflow", "wandb")  # what a job config may name (document 003)
AVAILABLE = ("mlflow",)  # what weft really logs to


def tracker_unavailable(tracker: str | None) -> str | None:
    """Why weft cannot track a run in `tracker`, or None when it can (or no tracker is asked for)."""
    if tracker is None or tracker in AVAILABLE:
        return None
    if tracker not in TRACKERS:
        return f"experiment_tracker must be one of {list(TRACKERS)}"
    if importlib.util.find_spec(tracker) is None:
        return (f"experiment_tracker {tracker!r} is not available: {tracker} is not installed on this weft "
                f"server; use one of {list(AVAILABLE)}")
    return f"experiment_tracker {tracker!r} is not available: weft logs runs to {list(AVAILABLE)} only"


class NoTracking:
    """The tracker of a job without `experiment_tracker`: no callbacks, nothing logged."""

    callbacks: list[Any] = []

    def log_outputs(self, adapter_dir: Path, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """Nothing to log."""


@contextmanager
def tracked_run(tracker: str | None, job_id: str, owner_id: str, project: str | None, run_name: str,
                params: dict[str, Any]) -> Iterator[Any]:
    """The job's run in `tracker` for the duration of the block (its trainer callbacks and `log_outputs`),
    ended FINISHED when the block completes and FAILED when it raises."""
    if tracker is None:
        yield NoTracking()
        return
    if why := tracker_unavailable(tracker):
        raise ValueError(why)
    from weft.tracking import mlflow_runs

    run = mlflow_runs.open_run(job_id, owner_id, project, run_name, params)
    try:
        yield run
    except Exception:
        run.end("FAILED")
        raise
    except BaseException:  # interrupted (cancelled, shut down): not a failure of the training itself
        run.end("KILLED")
        raise
    run.end("FINISHED")
