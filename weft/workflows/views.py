"""Reading workflows: the stored steps, the merged data, the caller's workflow, and the views the
API returns (status, reason and per-stage progress come from the Prefect run)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from weft import runs
from weft.clock import utcnow
from weft.errors import Invalid, NotFound
from weft.schemas.workflows import StageView, WorkflowOutput, WorkflowSummary, WorkflowView
from weft.specs import REGISTRY, WorkflowType, get_type
from weft.statuses import TERMINAL, StageStatus, WorkflowStatus
from weft.tables import Adapter, Model, Workflow, WorkflowStep


def stored_steps(session: Session, workflow_id: str) -> list[WorkflowStep]:
    stmt = select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id).order_by(WorkflowStep.step_number)
    return list(session.exec(stmt))


def merged_data(steps: list[WorkflowStep], before: int | None = None) -> dict[str, Any]:
    """The steps' fields together (a later step's value wins); only steps before `before` if given."""
    data: dict[str, Any] = {}
    for step in steps:
        if before is None or step.step_number < before:
            data.update(step.data)
    return data


def owned(session: Session, user_id: str, workflow_id: str, kind: str = "workflow") -> Workflow:
    """The caller's workflow `workflow_id`; anyone else's (or none) is `NotFound`."""
    wf = session.get(Workflow, workflow_id)
    if wf is None or wf.user_id != user_id:
        raise NotFound.of(kind, workflow_id)
    return wf


def next_step(wt: WorkflowType, wf: Workflow) -> int | None:
    if wf.flow_run_id or wf.status in TERMINAL:
        return None
    return next((s.number for s in wt.steps if s.number > wf.current_step), None)


def refresh_status(session: Session, workflows: list[Workflow]) -> None:
    """Update the stored status of unfinished, triggered workflows from their flow runs."""
    live = [wf for wf in workflows if wf.flow_run_id and wf.status not in TERMINAL]
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
        stages = [StageView(id=s.id, title=s.title, status=StageStatus.PENDING) for s in wt.stages]
    data = merged_data(stored_steps(session, wf.id))
    adapter = session.exec(select(Adapter).where(Adapter.workflow_id == wf.id)).first()
    model_id = adapter.model_id if adapter else session.exec(
        select(Model.id).where(Model.workflow_id == wf.id).order_by(col(Model.created_at).desc())).first()
    output = WorkflowOutput(model_id=model_id, adapter_id=adapter.id if adapter else None,
                            checkpoint_path=adapter.storage_key if adapter else None) if adapter or model_id else None
    return WorkflowView(
        workflow_id=wf.id, id=wf.id, name=wf.name or data.get("name"), description=wf.description,
        workflow_type=wf.workflow_type, status=wf.status, current_step=wf.current_step,
        total_steps=wf.total_steps, next_step=next_step(wt, wf), steps=stages, data=data, config=data,
        flow_run_id=wf.flow_run_id, reason=wf.reason, metrics=adapter.metrics if adapter else {}, output=output,
        created_at=wf.created_at, updated_at=wf.updated_at,
        completed_at=wf.updated_at if wf.status == WorkflowStatus.COMPLETED else None,
    )


def get(session: Session, user_id: str, workflow_id: str) -> WorkflowView:
    """The view of the caller's workflow `workflow_id`."""
    return view(session, owned(session, user_id, workflow_id))


def summary(session: Session, wf: Workflow) -> WorkflowSummary:
    data = merged_data(stored_steps(session, wf.id))
    return WorkflowSummary(id=wf.id, workflow_type=wf.workflow_type, name=wf.name or data.get("name"), status=wf.status,
                           current_step=wf.current_step, total_steps=wf.total_steps, flow_run_id=wf.flow_run_id,
                           reason=wf.reason, created_at=wf.created_at, updated_at=wf.updated_at)


def listing(session: Session, user_id: str, workflow_type: str | None = None,
            status: str | None = None) -> SelectOfScalar[Workflow]:
    """The caller's workflows (of one type, in one status), newest first, as a query to page through; the
    unfinished ones' statuses are refreshed from their runs first so the status filter is current."""
    if workflow_type and workflow_type not in REGISTRY:
        raise Invalid(f"unknown workflow_type {workflow_type}",
                      details={"parameter": "workflow_type", "allowed": sorted(REGISTRY)})
    stmt = select(Workflow).where(Workflow.user_id == user_id)
    if workflow_type:
        stmt = stmt.where(Workflow.workflow_type == workflow_type)
    refresh_status(session, list(session.exec(stmt.where(col(Workflow.status).not_in(TERMINAL)))))
    if status:
        stmt = stmt.where(Workflow.status == status.upper())
    return stmt.order_by(col(Workflow.created_at).desc())
