"""Document 000's workflows: `POST /workflows` stores a whole workflow from one `config`, `/start`
runs it. They map onto the same step records and flows as the step API (`fine-tuning` is fine_tune)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, SessionDep
from api.errors import ApiError
from weft import jobs, workflows
from weft.clock import utcnow
from weft.schemas.workflow_create import WorkflowCreate, WorkflowCreated, WorkflowStarted

router = APIRouter(tags=["workflows"])


@router.post("/workflows", status_code=201, response_model=WorkflowCreated)
def create_workflow(body: WorkflowCreate, user: CurrentUser, session: SessionDep) -> WorkflowCreated:
    """Validate and store every step of the workflow; `POST /workflows/{id}/start` runs it."""
    try:
        wf = workflows.create_from_config(session, user.id, body.workflow_type, body.name, body.description,
                                          body.config)
    except jobs.InvalidConfig as exc:
        raise ApiError(400, "INVALID_CONFIG", str(exc), exc.details) from exc
    return WorkflowCreated(id=wf.id, name=body.name, description=body.description, workflow_type=body.workflow_type,
                           status=wf.status.lower(), created_at=wf.created_at, updated_at=wf.updated_at)


@router.post("/workflows/{workflow_id}/start", response_model=WorkflowStarted)
def start_workflow(workflow_id: str, user: CurrentUser, session: SessionDep) -> WorkflowStarted:
    """Start the flow run of a stored workflow (the same run when it has already started)."""
    wf = workflows.start_stored(session, user.id, workflow_id)
    return WorkflowStarted(id=wf.id, status=wf.status.lower(), flow_run_id=wf.flow_run_id, started_at=wf.updated_at,
                           updated_at=utcnow())
