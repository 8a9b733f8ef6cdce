"""What every workflow flow does first: know its workflow record and owner."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel
from sqlmodel import select

from weft.db import session_scope
from weft.specs import get_type
from weft.statuses import WorkflowStatus
from weft.tables import User, Workflow, WorkflowStep


class WorkflowRef(BaseModel):
    workflow_id: str
    owner_id: str


def workflow_ref(workflow_type: str, spec: BaseModel, workflow_id: str | None, owner_id: str | None) -> WorkflowRef:
    """The workflow this run serves. Runs started from the Prefect UI or a schedule have no record
    yet: one is created (id = the flow run id, owner = `owner_id` or the first user) so the API
    shows them like any other."""
    if workflow_id:
        with session_scope() as s:
            wf = s.get(Workflow, workflow_id)
            if wf is None:
                raise ValueError(f"workflow {workflow_id} does not exist")
            return WorkflowRef(workflow_id=workflow_id, owner_id=wf.user_id)
    run_id = str(flow_run.id)
    wt = get_type(workflow_type)
    with session_scope() as s:
        if s.get(Workflow, run_id) is None:
            owner = s.get(User, owner_id) if owner_id else s.exec(select(User).order_by(User.created_at)).first()
            if owner is None and owner_id:
                raise ValueError(f"owner_id {owner_id} is not a weft user")
            if owner is None:
                raise ValueError("no weft user to own this workflow: register one (POST /api/v1/auth/register) "
                                 "or pass owner_id")
            s.add(Workflow(id=run_id, user_id=owner.id, workflow_type=workflow_type, status=WorkflowStatus.RUNNING,
                           total_steps=len(wt.steps), current_step=wt.steps[-1].number, flow_run_id=run_id))
            data = spec.model_dump(mode="json")
            for step in wt.steps:
                s.add(WorkflowStep(workflow_id=run_id, step_number=step.number,
                                   data={k: data[k] for k in step.model.model_fields if k in data}))
            owner_id = owner.id
        else:
            owner_id = s.get(Workflow, run_id).user_id
    get_run_logger().info("started outside the API: created workflow %s for user %s", run_id, owner_id)
    return WorkflowRef(workflow_id=run_id, owner_id=owner_id)
