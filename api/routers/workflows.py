"""The step-numbered workflow API (document 004) and the workflow runs it starts.

Each POST validates one step against that step's model and stores it; `trigger_workflow: true`
validates the merged spec and starts the flow run through its Prefect deployment.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Body, Query
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError, not_found
from api.paging import Paging, paginate
from weft import runs
from weft.db import get_engine
from weft.specs import REGISTRY, StepContext, WorkflowType, get_type
from weft.specs.base import Refused
from weft.tables import Workflow, utcnow
from weft.workflows import (StartFailed, WorkflowView, merged_data, put_step, refresh_status, start, stored_steps,
                            summary, view)

log = logging.getLogger(__name__)
router = APIRouter(tags=["workflows"])


class StepEnvelope(BaseModel):
    """The fields every step post carries besides its own."""

    workflow_id: str | None = None
    workflow_total_steps: int | None = Field(default=None, ge=1, le=50)
    step_number: int = Field(ge=1)
    trigger_workflow: bool = False


def invalid(exc: ValidationError, message: str) -> ApiError:
    details = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
    return ApiError(422, "VALIDATION_ERROR", message, {"errors": details})


def owned_workflow(session: Session, user_id: str, workflow_id: str) -> Workflow:
    return get_owned(session, Workflow, workflow_id, user_id, "workflow")


def start_run(session: Session, wt: WorkflowType, wf: Workflow, spec: dict[str, Any]) -> None:
    """`weft.workflows.start` with its refusals as 409 and an unreachable Prefect as 503."""
    try:
        start(session, wt, wf, spec)
    except Refused as exc:
        raise ApiError(409, exc.code, exc.message, exc.details) from exc
    except StartFailed as exc:
        log.exception("could not start %s for workflow %s", wt.flow_name, wf.id)
        raise ApiError(503, "SERVICE_UNAVAILABLE", str(exc), {"flow": wt.flow_name}) from exc


def post_step(wt: WorkflowType, body: dict[str, Any], user_id: str, session: Session) -> WorkflowView:
    """Validate and store one step; trigger the flow run when asked."""
    if not isinstance(body, dict):
        raise ApiError(422, "VALIDATION_ERROR", "the request body must be a JSON object")
    envelope_keys = set(StepEnvelope.model_fields)
    try:
        envelope = StepEnvelope.model_validate({k: v for k, v in body.items() if k in envelope_keys})
    except ValidationError as exc:
        raise invalid(exc, "invalid workflow step") from exc
    fields = {k: v for k, v in body.items() if k not in envelope_keys}

    if envelope.workflow_id:
        wf = owned_workflow(session, user_id, envelope.workflow_id)
        if wf.workflow_type != wt.name:
            raise not_found(f"{wt.name} workflow", envelope.workflow_id)
        if wf.flow_run_id and wf.status not in runs.TERMINAL and envelope.trigger_workflow:
            return view(session, wf)  # a repeated trigger: same run, nothing changes
        if wf.flow_run_id or wf.status in runs.TERMINAL:
            raise ApiError(409, "CONFLICT", f"workflow {wf.id} was already started (status {wf.status}); "
                           "steps can no longer change", {"workflow_id": wf.id, "status": wf.status})
    else:
        if envelope.workflow_total_steps is None:
            raise ApiError(422, "VALIDATION_ERROR", "workflow_total_steps is required to start a workflow",
                           {"errors": [{"field": "workflow_total_steps", "message": "Field required"}]})
        if envelope.step_number != wt.steps[0].number:
            raise ApiError(422, "VALIDATION_ERROR", f"a new workflow starts at step {wt.steps[0].number}",
                           {"errors": [{"field": "step_number", "message": "send workflow_id for later steps"}]})
        wf = Workflow(user_id=user_id, workflow_type=wt.name, total_steps=envelope.workflow_total_steps)

    step = wt.step(envelope.step_number)
    if step is None:
        numbers = [s.number for s in wt.steps]
        raise ApiError(422, "VALIDATION_ERROR", f"{wt.name} has no step {envelope.step_number}",
                       {"errors": [{"field": "step_number", "message": f"expected one of {numbers}"}]})
    previous = merged_data(stored_steps(session, wf.id), before=step.number) if envelope.workflow_id else {}
    context = StepContext(user_id=user_id, previous=previous, session=session)
    try:
        data = step.model.model_validate(fields, context=context).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid(exc, f"step {step.number} ({step.title}) is invalid") from exc
    spec: dict[str, Any] | None = None
    if envelope.trigger_workflow:
        try:
            spec = wt.spec.model_validate({**previous, **data}, context=context).model_dump(mode="json")
        except ValidationError as exc:
            raise invalid(exc, f"the {wt.name} workflow is incomplete and cannot be triggered") from exc

    try:
        session.add(wf)
        put_step(session, wf, step.number, data)
        session.commit()
    except OperationalError as exc:
        session.rollback()
        raise ApiError(503, "SERVICE_UNAVAILABLE", "the database is busy; try again") from exc
    session.refresh(wf)
    if spec is not None and not wf.flow_run_id:
        start_run(session, wt, wf, spec)
    return view(session, wf)


def step_endpoint(type_name: str):
    """A POST handler for one workflow type's step sequence."""
    wt = get_type(type_name)

    def handler(user: CurrentUser, session: SessionDep, body: dict[str, Any] = Body(...)) -> WorkflowView:
        return post_step(wt, body, user.id, session)

    handler.__doc__ = f"{wt.title}: post one step of the sequence ({', '.join(s.title for s in wt.steps)})."
    return handler


for _path, _type in (("/models/local-model-workflow", "add_local_model"),
                     ("/models/cloud-model-workflow", "add_cloud_model"),
                     ("/models/security-scan", "model_security_scan"),
                     ("/models/finetune-workflow", "fine_tune"),
                     ("/models/evaluate-workflow", "evaluate_model"),
                     ("/models/deploy-workflow", "deploy_model"),
                     ("/endpoints/add-worker", "add_worker")):
    router.add_api_route(_path, step_endpoint(_type), methods=["POST"], response_model=WorkflowView,
                         name=f"{_type}_step", summary=f"{get_type(_type).title} (step API)")


@router.get("/workflows")
def list_workflows(user: CurrentUser, session: SessionDep, page: Paging,
                   workflow_type: str | None = Query(default=None), status: str | None = Query(default=None)) -> dict:
    """The caller's workflows, newest first."""
    if workflow_type and workflow_type not in REGISTRY:
        raise ApiError(422, "VALIDATION_ERROR", f"unknown workflow_type {workflow_type}",
                       {"parameter": "workflow_type", "allowed": sorted(REGISTRY)})
    stmt = select(Workflow).where(Workflow.user_id == user.id)
    if workflow_type:
        stmt = stmt.where(Workflow.workflow_type == workflow_type)
    refresh_status(session, list(session.exec(stmt.where(col(Workflow.status).not_in(runs.TERMINAL)))))
    if status:
        stmt = stmt.where(Workflow.status == status.upper())
    return paginate(session, stmt.order_by(col(Workflow.created_at).desc()), page,
                    lambda wf: summary(session, wf).model_dump(mode="json"))


@router.get("/workflows/{workflow_id}", response_model=WorkflowView)
def get_workflow(workflow_id: str, user: CurrentUser, session: SessionDep) -> WorkflowView:
    return view(session, owned_workflow(session, user.id, workflow_id))


def compensate_after_cancel(workflow_id: str, flow_run_id: str | None) -> None:
    """Once the run is really finished, undo what it left half-done (runs after the response)."""
    if flow_run_id:
        runs.wait_terminal(flow_run_id)
    with Session(get_engine()) as session:
        wf = session.get(Workflow, workflow_id)
        wt = get_type(wf.workflow_type)
        if wt.compensate:
            wt.compensate(workflow_id)
        wf.cache_version += 1  # a retry starts from scratch: the cancelled run's cached steps are gone
        session.add(wf)
        session.commit()


@router.post("/workflows/{workflow_id}/cancel", response_model=WorkflowView)
def cancel_workflow(workflow_id: str, user: CurrentUser, session: SessionDep, background: BackgroundTasks) -> WorkflowView:
    """Cancel the flow run (its process is killed) and run the workflow's compensation."""
    wf = owned_workflow(session, user.id, workflow_id)
    refresh_status(session, [wf])
    if wf.status in runs.TERMINAL:
        raise ApiError(409, "CONFLICT", f"workflow {wf.id} is already {wf.status}", {"status": wf.status})
    if wf.flow_run_id:
        wf.status = runs.cancel(wf.flow_run_id)
    else:
        wf.status, wf.reason = "CANCELLED", "Cancelled before it was triggered"
    wf.updated_at = utcnow()
    session.add(wf)
    session.commit()
    background.add_task(compensate_after_cancel, wf.id, wf.flow_run_id)
    return view(session, wf)


@router.post("/workflows/{workflow_id}/retry", response_model=WorkflowView)
def retry_workflow(workflow_id: str, user: CurrentUser, session: SessionDep) -> WorkflowView:
    """A new flow run of the same spec; finished steps are taken from the cache, not re-run."""
    wf = owned_workflow(session, user.id, workflow_id)
    refresh_status(session, [wf])
    if not wf.flow_run_id or wf.status not in ("FAILED", "CANCELLED"):
        raise ApiError(409, "CONFLICT", f"only a FAILED or CANCELLED run can be retried; workflow {wf.id} is "
                       f"{wf.status}", {"status": wf.status})
    wt = get_type(wf.workflow_type)
    spec = wt.spec.model_validate(merged_data(stored_steps(session, wf.id))).model_dump(mode="json")
    wf.run_count += 1
    start_run(session, wt, wf, spec)
    return view(session, wf)
