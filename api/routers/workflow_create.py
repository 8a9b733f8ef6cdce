"""Document 000's workflows: `POST /workflows` stores a whole workflow from one `config`, `/start`
runs it. They map onto the same step records and flows as the step API (`fine-tuning` is fine_tune)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationError

from api.deps import CurrentUser, SessionDep
from api.errors import ApiError
from api.routers.workflows import invalid, owned_workflow, post_step, start_run
from weft import jobs, runs
from weft.specs import REGISTRY, get_type
from weft.tables import Workflow, utcnow
from weft.workflows import discard, merged_data, refresh_status, stored_steps

router = APIRouter(tags=["workflows"])
ALIASES = {"fine-tuning": "fine_tune"}  # document 000's names → weft's workflow types


class WorkflowCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    workflow_type: str
    config: dict[str, Any]


class WorkflowCreated(BaseModel):
    id: str
    name: str
    description: str | None
    workflow_type: str
    status: str
    created_at: datetime
    updated_at: datetime


class WorkflowStarted(BaseModel):
    id: str
    status: str
    flow_run_id: str
    started_at: datetime
    updated_at: datetime


def steps_of(type_name: str, name: str, config: dict[str, Any], session, user_id: str) -> list[dict[str, Any]]:
    """The step bodies of a workflow created from one config."""
    if type_name == "fine_tune" and "model" in config:  # document 000's shape
        step1, step2 = jobs.job_steps(session, user_id, jobs.job_config_of_workflow(name, config))
        return [step1, step2]
    wt = get_type(type_name)  # weft's own shape: the merged spec
    return [{k: v for k, v in config.items() if k in step.model.model_fields} for step in wt.steps]


@router.post("/workflows", status_code=201, response_model=WorkflowCreated)
def create_workflow(body: WorkflowCreate, user: CurrentUser, session: SessionDep) -> WorkflowCreated:
    """Validate and store every step of the workflow; `POST /workflows/{id}/start` runs it."""
    type_name = ALIASES.get(body.workflow_type, body.workflow_type)
    if type_name not in REGISTRY:
        raise ApiError(422, "VALIDATION_ERROR", f"unknown workflow_type {body.workflow_type}",
                       {"field": "workflow_type", "allowed": sorted([*ALIASES, *REGISTRY])})
    wt = get_type(type_name)
    try:
        bodies = steps_of(type_name, body.name, body.config, session, user.id)
    except jobs.InvalidConfig as exc:
        raise ApiError(400, "INVALID_CONFIG", str(exc), exc.details) from exc
    workflow_id = None
    try:
        for step, fields in zip(wt.steps, bodies):
            envelope = {"workflow_id": workflow_id} if workflow_id else {"workflow_total_steps": len(wt.steps)}
            workflow_id = post_step(wt, {**envelope, "step_number": step.number, **fields}, user.id, session).workflow_id
    except ApiError:
        if workflow_id:
            discard(session, workflow_id)
        raise
    wf = session.get(Workflow, workflow_id)
    wf.name, wf.description = body.name, body.description
    session.add(wf)
    session.commit()
    return WorkflowCreated(id=wf.id, name=body.name, description=body.description, workflow_type=body.workflow_type,
                           status=wf.status.lower(), created_at=wf.created_at, updated_at=wf.updated_at)


@router.post("/workflows/{workflow_id}/start", response_model=WorkflowStarted)
def start_workflow(workflow_id: str, user: CurrentUser, session: SessionDep) -> WorkflowStarted:
    """Start the flow run of a stored workflow (the same run when it has already started)."""
    wf = owned_workflow(session, user.id, workflow_id)
    refresh_status(session, [wf])
    if wf.status in runs.TERMINAL:
        raise ApiError(409, "CONFLICT", f"workflow {wf.id} is already {wf.status}; use /retry", {"status": wf.status})
    if not wf.flow_run_id:
        wt = get_type(wf.workflow_type)
        try:
            spec = wt.spec.model_validate(merged_data(stored_steps(session, wf.id))).model_dump(mode="json")
        except ValidationError as exc:
            raise invalid(exc, f"workflow {wf.id} is incomplete: post its remaining steps first") from exc
        start_run(session, wt, wf, spec)
    return WorkflowStarted(id=wf.id, status=wf.status.lower(), flow_run_id=wf.flow_run_id, started_at=wf.updated_at,
                           updated_at=utcnow())
