"""Experiments (document 003): the tracked runs of a user's fine-tune jobs, read back from the tracker
(MLflow). An experiment's id is its job (workflow) id, so `POST /experiments/compare` accepts it;
its `project` is the tracker's experiment name (the job's `project_name`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from weft.errors import Invalid, Unavailable
from weft.statuses import RunStatus, WorkflowStatus
from weft.tables import Workflow
from weft.tracking import AVAILABLE, tracker_unavailable
from weft.workflows import refresh_status

# MLflow's run status -> document 003's
STATUS = {"SCHEDULED": RunStatus.PENDING, "RUNNING": RunStatus.RUNNING, "FINISHED": RunStatus.COMPLETED,
          "FAILED": RunStatus.FAILED, "KILLED": RunStatus.CANCELLED}
ENDED = {WorkflowStatus.FAILED: RunStatus.FAILED, WorkflowStatus.CANCELLED: RunStatus.CANCELLED}
LOSSES = {"loss": "best_loss", "eval_loss": "best_eval_loss"}


class Experiment(BaseModel):
    id: str  # the weft job (workflow) id
    tracker: str
    project: str
    name: str
    status: str
    metrics: dict[str, float]
    config: dict[str, Any]
    created_at: datetime
    ended_at: datetime | None
    run_id: str  # the tracker's own run id


def param(text: str) -> Any:
    """A param back as its value: numbers, booleans, null and lists were logged as JSON, text as is."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def list_experiments(session: Session, user_id: str, tracker: str | None = None,
                     project: str | None = None) -> list[Experiment]:
    """`user_id`'s tracked jobs (in `project` when given), newest first. A tracker weft cannot read is an
    `Invalid` naming it. Best losses are left to `with_best_losses` (one history read per run)."""
    if tracker is not None and (why := tracker_unavailable(tracker)):
        raise Invalid(why, [{"field": "tracker", "message": why}], {"available": list(AVAILABLE)})
    from mlflow.exceptions import MlflowException

    from weft.tracking import mlflow_runs

    try:
        runs = mlflow_runs.owner_runs(user_id, project)
    except MlflowException as exc:  # a tracking server that is down or refuses weft's requests
        raise Unavailable(f"the MLflow tracking store cannot be read: {exc.message}", {"tracker": "mlflow"}) from exc
    jobs = {wf.id: wf for wf in session.exec(select(Workflow).where(
        Workflow.user_id == user_id, col(Workflow.id).in_({r.job_id for r in runs})))}
    # a run left RUNNING by a killed process (cancelled, crashed) takes its job's end state
    refresh_status(session, [jobs[r.job_id] for r in runs if r.status == "RUNNING" and r.job_id in jobs])
    items = []
    for run in runs:
        job = jobs.get(run.job_id)
        if job is None:
            continue  # not (or no longer) this user's job
        status = STATUS.get(run.status, RunStatus.RUNNING)
        if status == RunStatus.RUNNING and job.status in ENDED:
            status = ENDED[job.status]
        metrics = dict(run.metrics)
        if "loss" in metrics:
            metrics["final_loss"] = metrics["loss"]
        items.append(Experiment(id=run.job_id, tracker="mlflow", project=run.project, name=run.name,
                                status=status, metrics=metrics, config={k: param(v) for k, v in run.params.items()},
                                created_at=run.start_time, ended_at=run.end_time, run_id=run.run_id))
    return items


def with_best_losses(items: list[Experiment]) -> list[Experiment]:
    """`best_loss` (and `best_eval_loss`): the lowest loss each run reached over its steps."""
    if not items:
        return items
    from weft.tracking import mlflow_runs

    for item in items:
        best = mlflow_runs.best_values(item.run_id, [k for k in LOSSES if k in item.metrics])
        item.metrics.update({LOSSES[k]: v for k, v in best.items()})
    return items
