"""A workflow's runs: start one (admission, then the flow run through its deployment), start a stored
workflow, cancel (then compensate), and retry with a new run of the same spec."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from weft import runs
from weft.clock import utcnow
from weft.compute.placement import place
from weft.db import get_engine
from weft.errors import Conflict, Invalid, Unavailable, WeftError
from weft.specs import WorkflowType, get_type
from weft.statuses import RETRYABLE, TERMINAL, WorkflowStatus
from weft.tables import Workflow
from weft.workflows.views import merged_data, owned, refresh_status, stored_steps

log = logging.getLogger(__name__)


def start(session: Session, wt: WorkflowType, wf: Workflow, spec: dict[str, Any]) -> None:
    """Admit (raises `Refused`), place it on a pool (`weft.compute.placement`), create the flow run
    (idempotent per workflow and run number) and remember its id on the workflow; `Unavailable` when the
    run cannot be created (the Prefect server is down, the deployment is missing)."""
    if wt.admit:
        wt.admit(session, spec)
    try:
        pool, note = place(session, wt, wf, spec)
        flow_run_id = runs.trigger(wt, wf.id, spec, run_number=wf.run_count, cache_version=wf.cache_version,
                                   owner_id=wf.user_id, pool=pool, note=note)
    except WeftError:
        raise
    except Exception as exc:
        log.exception("could not start %s for workflow %s", wt.flow_name, wf.id)
        raise Unavailable(f"could not start the {wt.name} flow run: {exc}", {"flow": wt.flow_name}) from exc
    wf.flow_run_id, wf.status, wf.reason, wf.updated_at = flow_run_id, WorkflowStatus.PENDING, None, utcnow()
    session.add(wf)
    session.commit()


def stored_spec(session: Session, wt: WorkflowType, wf: Workflow, incomplete: str | None = None) -> dict[str, Any]:
    """The merged spec of the workflow's stored steps; `Invalid` (with `incomplete` as the message)
    when a step is missing."""
    try:
        return wt.spec.model_validate(merged_data(stored_steps(session, wf.id))).model_dump(mode="json")
    except ValidationError as exc:
        raise Invalid.of(exc, incomplete or f"workflow {wf.id} is incomplete: post its remaining steps first") from exc


def start_stored(session: Session, user_id: str, workflow_id: str) -> Workflow:
    """Start the flow run of a stored workflow (document 000's /start); the same run when it has
    already started."""
    wf = owned(session, user_id, workflow_id)
    refresh_status(session, [wf])
    if wf.status in TERMINAL:
        raise Conflict(f"workflow {wf.id} is already {wf.status}; use /retry", {"status": wf.status})
    if not wf.flow_run_id:
        wt = get_type(wf.workflow_type)
        start(session, wt, wf, stored_spec(session, wt, wf))
    return wf


def cancel(session: Session, user_id: str, workflow_id: str) -> Workflow:
    """Cancel the flow run (its process is killed). The caller runs `compensate_after_cancel(wf.id,
    wf.flow_run_id)` afterwards (after the response: it waits for the run to end)."""
    wf = owned(session, user_id, workflow_id)
    refresh_status(session, [wf])
    if wf.status in TERMINAL:
        raise Conflict(f"workflow {wf.id} is already {wf.status}", {"status": wf.status})
    if wf.flow_run_id:
        wf.status = runs.cancel(wf.flow_run_id)
    else:
        wf.status, wf.reason = WorkflowStatus.CANCELLED, "Cancelled before it was triggered"
    wf.updated_at = utcnow()
    session.add(wf)
    session.commit()
    return wf


def compensate_after_cancel(workflow_id: str, flow_run_id: str | None) -> None:
    """Once the run is really finished, undo what it left half-done (in its own session)."""
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


def retry(session: Session, user_id: str, workflow_id: str) -> Workflow:
    """A new flow run of the same spec; finished steps are taken from the cache, not re-run."""
    wf = owned(session, user_id, workflow_id)
    refresh_status(session, [wf])
    if not wf.flow_run_id or wf.status not in RETRYABLE:
        raise Conflict(f"only a FAILED or CANCELLED run can be retried; workflow {wf.id} is {wf.status}",
                       {"status": wf.status})
    wt = get_type(wf.workflow_type)
    spec = stored_spec(session, wt, wf)
    wf.run_count += 1
    start(session, wt, wf, spec)
    return wf
