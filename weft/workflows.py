"""Workflow records: stored steps, the merged spec, and the view the step API returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, delete, select

from weft import runs
from weft.specs import WorkflowType, get_type
from weft.tables import Workflow, WorkflowStep, utcnow


class WorkflowView(BaseModel):
    """The merged view of document 004's step API."""

    workflow_id: str
    workflow_type: str
    status: str
    current_step: int
    total_steps: int
    next_step: int | None
    steps: list[runs.StageView]
    data: dict[str, Any]
    flow_run_id: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class WorkflowSummary(BaseModel):
    id: str
    workflow_type: str
    name: str | None
    status: str
    current_step: int
    total_steps: int
    flow_run_id: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


def stored_steps(session: Session, workflow_id: str) -> list[WorkflowStep]:
    stmt = select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id).order_by(WorkflowStep.step_number)
    return list(session.exec(stmt))


def merged_data(steps: list[WorkflowStep], before: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for step in steps:
        if before is None or step.step_number < before:
            data.update(step.data)
    return data


def put_step(session: Session, wf: Workflow, number: int, data: dict[str, Any]) -> None:
    """Store step `number`, replacing it and clearing every later step."""
    session.exec(delete(WorkflowStep).where(col(WorkflowStep.workflow_id) == wf.id,
                                            col(WorkflowStep.step_number) >= number))
    session.add(WorkflowStep(workflow_id=wf.id, step_number=number, data=data))
    wf.current_step = number
    wf.updated_at = utcnow()
    session.add(wf)


class StartFailed(RuntimeError):
    """The flow run could not be created (the Prefect server is down, the deployment is missing)."""


def start(session: Session, wt: WorkflowType, wf: Workflow, spec: dict[str, Any]) -> None:
    """Admit (raises `Refused`), create the flow run (idempotent per workflow and run number) and
    remember its id on the workflow."""
    if wt.admit:
        wt.admit(session, spec)
    try:
        flow_run_id = runs.trigger(wt, wf.id, spec, run_number=wf.run_count, cache_version=wf.cache_version,
                                   owner_id=wf.user_id)
    except Exception as exc:
        raise StartFailed(f"could not start the {wt.name} flow run: {exc}") from exc
    wf.flow_run_id, wf.status, wf.reason, wf.updated_at = flow_run_id, "PENDING", None, utcnow()
    session.add(wf)
    session.commit()


def discard(session: Session, workflow_id: str) -> None:
    """Remove a workflow that was never triggered, with its steps (a multi-step create that failed)."""
    session.rollback()
    session.exec(delete(WorkflowStep).where(col(WorkflowStep.workflow_id) == workflow_id))
    session.exec(delete(Workflow).where(col(Workflow.id) == workflow_id, col(Workflow.flow_run_id).is_(None)))
    session.commit()


def next_step(wt: WorkflowType, wf: Workflow) -> int | None:
    if wf.flow_run_id or wf.status in runs.TERMINAL:
        return None
    return next((s.number for s in wt.steps if s.number > wf.current_step), None)


def refresh_status(session: Session, workflows: list[Workflow]) -> None:
    """Update the stored status of unfinished, triggered workflows from their flow runs."""
    live = [wf for wf in workflows if wf.flow_run_id and wf.status not in runs.TERMINAL]
    statuses = runs.run_statuses([wf.flow_run_id for wf in live])
    for wf in live:
        status, reason = statuses.get(wf.flow_run_id, (wf.status, wf.reason))
        if (status, reason) != (wf.status, wf.reason):
            wf.status, wf.reason, wf.updated_at = status, reason, utcnow()
            session.add(wf)
    session.commit()


def view(session: Session, wf: Workflow) -> WorkflowView:
    """The merged view; status, reason and per-stage status come from the Prefect run."""
    wt = get_type(wf.workflow_type)
    if wf.flow_run_id:
        run = runs.run_view(wt, wf.flow_run_id)
        if (run.status, run.reason) != (wf.status, wf.reason):
            wf.status, wf.reason, wf.updated_at = run.status, run.reason, utcnow()
            session.add(wf)
            session.commit()
        stages = run.stages
    else:
        stages = [runs.StageView(id=s.id, title=s.title, status="pending") for s in wt.stages]
    return WorkflowView(
        workflow_id=wf.id, workflow_type=wf.workflow_type, status=wf.status, current_step=wf.current_step,
        total_steps=wf.total_steps, next_step=next_step(wt, wf), steps=stages,
        data=merged_data(stored_steps(session, wf.id)), flow_run_id=wf.flow_run_id, reason=wf.reason,
        created_at=wf.created_at, updated_at=wf.updated_at,
    )


def summary(session: Session, wf: Workflow) -> WorkflowSummary:
    data = merged_data(stored_steps(session, wf.id))
    return WorkflowSummary(id=wf.id, workflow_type=wf.workflow_type, name=wf.name or data.get("name"), status=wf.status,
                           current_step=wf.current_step, total_steps=wf.total_steps, flow_run_id=wf.flow_run_id,
                           reason=wf.reason, created_at=wf.created_at, updated_at=wf.updated_at)
