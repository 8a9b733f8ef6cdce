"""Workflow events from Prefect: compare weft's workflows with their flow runs and emit each transition once."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import or_, text
from sqlmodel import Session, col, select

from weft.clock import as_utc, utcnow
from weft.statuses import TERMINAL, WorkflowStatus
from weft.tables import Event, Workflow
from weft.webhooks.outbox import emit

RECONCILE_LOCK = 0x77656675  # the PostgreSQL advisory lock a reconcile holds for its transaction
WORKFLOW_EVENTS = {WorkflowStatus.RUNNING: "workflow.started", WorkflowStatus.COMPLETED: "workflow.completed",
                   WorkflowStatus.FAILED: "workflow.failed", WorkflowStatus.CANCELLED: "workflow.cancelled"}


def _flow_runs(flow_run_ids: list[str]) -> dict[str, tuple[str, str | None, bool]]:
    """Status, reason and whether it ever started, per flow run id (one Prefect call)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from weft.runs import status_of

    ids = []
    for i in flow_run_ids:
        try:
            ids.append(UUID(i))
        except ValueError:
            continue
    if not ids:
        return {}
    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
    out = {}
    for run in found:
        status, reason = status_of(run)
        out[str(run.id)] = (status, reason, run.start_time is not None or status == WorkflowStatus.RUNNING)
    return out


def workflow_key(workflow: Workflow, status: str) -> str:
    """The outbox key of a workflow transition (`created`, or the run's weft status)."""
    if status == "created":
        return f"workflow:{workflow.id}:created"
    return f"workflow:{workflow.id}:{workflow.run_count}:{status}"


def workflow_data(session: Session, workflow: Workflow, status: str, reason: str | None = None) -> dict[str, Any]:
    """Document 000's `data` of a workflow event."""
    name = workflow.name
    if name is None:
        try:
            from weft.workflows import merged_data, stored_steps

            name = merged_data(stored_steps(session, workflow.id)).get("name")
        except Exception:  # the name is a nicety
            name = None
    data: dict[str, Any] = {"workflow_id": workflow.id, "workflow_type": workflow.workflow_type, "name": name,
                            "status": status.lower(), "flow_run_id": workflow.flow_run_id,
                            "run_number": workflow.run_count}
    if reason:
        data["reason"] = reason
    if status == WorkflowStatus.COMPLETED:
        from weft.tables import Model

        model = session.exec(select(Model).where(Model.workflow_id == workflow.id)
                             .order_by(col(Model.created_at).desc())).first()
        if model is not None:
            data["output"] = {"model_id": model.id}
    return data


def reconcile(since: datetime, *, flow_run_ids: list[str] | None = None, limit: int = 1000) -> int:
    """Emit the workflow events that are due and not yet emitted; returns how many were emitted.

    Looks at workflows created or changed since `since`, and at every triggered workflow whose stored
    status is not final (or only those running `flow_run_ids`), reads their flow runs from Prefect in
    one call, stores the new status, and emits `workflow.created`, `workflow.started` (once the run has
    started) and `workflow.completed/failed/cancelled`. Each has a fixed key, so calling this again, from
    another process or after a restart, emits nothing twice. Synchronous: call it from a thread."""
    from weft.db import session_scope

    since = as_utc(since)
    emitted = 0
    with session_scope() as session:
        if session.get_bind().dialect.name == "postgresql":
            # one reconcile at a time across API processes: they would update the same workflows and
            # insert the same keys in orders that can deadlock; the next one finds the keys and skips them
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RECONCILE_LOCK})
        stmt = select(Workflow)
        if flow_run_ids is not None:
            stmt = stmt.where(col(Workflow.flow_run_id).in_(flow_run_ids))
        else:
            stmt = stmt.where(or_(
                (col(Workflow.flow_run_id).is_not(None)) & (col(Workflow.status).not_in(TERMINAL)),
                col(Workflow.updated_at) >= since, col(Workflow.created_at) >= since))
        workflows = session.exec(stmt.order_by(col(Workflow.updated_at).desc()).limit(limit)).all()
        if not workflows:
            return 0
        # skip what is known to be done: the keys already in the outbox
        wanted: dict[str, list[str]] = {}
        for wf in workflows:
            keys = [workflow_key(wf, "created")]
            if wf.flow_run_id:
                keys += [workflow_key(wf, WorkflowStatus.RUNNING)]
                if wf.status in TERMINAL:
                    keys.append(workflow_key(wf, wf.status))
            wanted[wf.id] = keys
        all_keys = [k for keys in wanted.values() for k in keys]
        existing: set[str] = set()
        for i in range(0, len(all_keys), 500):
            existing.update(session.exec(select(Event.key).where(col(Event.key).in_(all_keys[i:i + 500]))).all())

        for wf in workflows:
            if workflow_key(wf, "created") not in existing and as_utc(wf.created_at) >= since:
                emitted += bool(emit(session, "workflow.created", workflow_data(session, wf, WorkflowStatus.PENDING),
                                     key=workflow_key(wf, "created"), user_id=wf.user_id))
        live = [wf for wf in workflows if wf.flow_run_id and not (
            wf.status in TERMINAL and all(k in existing for k in wanted[wf.id][1:]))]
        if not live:
            return emitted
        runs = _flow_runs([wf.flow_run_id for wf in live])
        now = utcnow()
        for wf in live:
            if wf.flow_run_id not in runs:
                continue
            status, reason, started = runs[wf.flow_run_id]
            if (status, reason) != (wf.status, wf.reason):
                wf.status, wf.reason, wf.updated_at = status, reason, now
                session.add(wf)
            if started:  # a run can finish between two polls: its start is still an event of its own
                key = workflow_key(wf, WorkflowStatus.RUNNING)
                if key not in existing:
                    data = workflow_data(session, wf, WorkflowStatus.RUNNING)
                    emitted += bool(emit(session, "workflow.started", data, key=key, user_id=wf.user_id))
            if status in WORKFLOW_EVENTS and status != WorkflowStatus.RUNNING:
                key = workflow_key(wf, status)
                if key not in existing:
                    emitted += bool(emit(session, WORKFLOW_EVENTS[status], workflow_data(session, wf, status, reason),
                                         key=key, user_id=wf.user_id))
    return emitted
