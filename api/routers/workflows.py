"""The step-numbered workflow API (document 004) and the workflow runs it starts.

Each POST validates one step against that step's model and stores it; `trigger_workflow: true`
validates the merged spec and starts the flow run through its Prefect deployment. The work is the
workflow service's (`weft.workflows`); these handlers are HTTP only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Body, Query

from api.deps import CurrentUser, SessionDep
from api.paging import Listing, Paging, paginate
from weft import workflows
from weft.schemas.common import Page
from weft.schemas.workflows import STEP_ROUTES, WorkflowOut, WorkflowSummaryOut, WorkflowView, step_request
from weft.specs import get_type

router = APIRouter(tags=["workflows"])

def step_endpoint(type_name: str):
    """The POST handler of one workflow type's step sequence; its body is described in OpenAPI as the
    union of the type's steps (`weft.schemas.workflows.step_request`) and validated by the service."""
    wt = get_type(type_name)

    def handler(user: CurrentUser, session: SessionDep,
                body: Any = Body(..., title=f"{wt.title} step")) -> WorkflowView:
        return workflows.post_step(session, user.id, type_name, body)

    handler.__annotations__["body"] = step_request(type_name)
    handler.__doc__ = f"{wt.title}: post one step of the sequence ({', '.join(s.title for s in wt.steps)})."
    return handler


for _path, _type in STEP_ROUTES:
    router.add_api_route(_path, step_endpoint(_type), methods=["POST"], response_model=WorkflowOut,
                         name=f"{_type}_step", summary=f"{get_type(_type).title} (step API)")


@router.get("/workflows", response_model=Page[WorkflowSummaryOut])
def list_workflows(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing,
                   workflow_type: str | None = Query(default=None),
                   status: str | None = Query(default=None)) -> dict[str, Any]:
    """The caller's workflows, newest first."""
    stmt = workflows.listing(session, user.id, workflow_type=workflow_type, status=status)
    return paginate(session, stmt, page, lambda wf: workflows.summary(session, wf), listing, WorkflowSummaryOut)


@router.get("/workflows/{workflow_id}", response_model=WorkflowOut)
def get_workflow(workflow_id: str, user: CurrentUser, session: SessionDep) -> WorkflowView:
    return workflows.get(session, user.id, workflow_id)


@router.post("/workflows/{workflow_id}/cancel", response_model=WorkflowOut)
def cancel_workflow(workflow_id: str, user: CurrentUser, session: SessionDep,
                    background: BackgroundTasks) -> WorkflowView:
    """Cancel the flow run (its process is killed) and run the workflow's compensation."""
    wf = workflows.cancel(session, user.id, workflow_id)
    background.add_task(workflows.compensate_after_cancel, wf.id, wf.flow_run_id)
    return workflows.view(session, wf)


@router.post("/workflows/{workflow_id}/retry", response_model=WorkflowOut)
def retry_workflow(workflow_id: str, user: CurrentUser, session: SessionDep) -> WorkflowView:
    """A new flow run of the same spec; finished steps are taken from the cache, not re-run."""
    return workflows.view(session, workflows.retry(session, user.id, workflow_id))
