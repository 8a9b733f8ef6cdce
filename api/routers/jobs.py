"""Training jobs (document 003). A job is a fine_tune workflow (job id = workflow id)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Listing, Paging, paginate
from weft import jobs, workflows
from weft.compute import placement
from weft.errors import Invalid
from weft.schemas.jobs import (
    JobCancelled,
    JobCreateBody,
    JobCreated,
    JobList,
    JobLogs,
    JobOut,
    LogPush,
    LogPushed,
)
from weft.specs.names import WorkflowName
from weft.statuses import WorkflowStatus
from weft.tables import Placement, Workflow
from weft.workflows import merged_data, refresh_status, stored_steps

router = APIRouter(tags=["jobs"])


def job_view(session, wf: Workflow, detail: bool = False) -> dict[str, Any]:
    data = merged_data(stored_steps(session, wf.id))
    model, adapter = jobs.outputs(session, wf.id)
    view: dict[str, Any] = {
        "job_id": wf.id, "config": {"base_model": data.get("base_model"), "dataset_id": data.get("dataset_id"),
                                    "name": data.get("name"), **(data.get("config") or {}),
                                    **{k: data[k] for k in jobs.PLACEMENT_AND_TRACKING if data.get(k)}},
        "status": wf.status.lower(), "created_at": wf.created_at, "flow_run_id": wf.flow_run_id,
        "progress": (1.0 if wf.status == WorkflowStatus.COMPLETED
                     else jobs.progress_of(wf.flow_run_id) if wf.flow_run_id else 0.0),
        "metrics": adapter.metrics if adapter else {}, "reason": wf.reason,
        "model_id": model.id if model else None, "adapter_id": adapter.id if adapter else None,
    }
    if detail and adapter:
        view["artifact"] = {"path": adapter.storage_key, "size_bytes": adapter.size_bytes,
                            "hash": f"sha256:{adapter.sha256}"}
    if detail:
        view["duration_seconds"], view["cost"] = placement.run_cost(session, wf)
    return view


def owned_job(session, user_id: str, job_id: str) -> Workflow:
    wf = get_owned(session, Workflow, job_id, user_id, "job")
    if wf.workflow_type != WorkflowName.FINE_TUNE:
        raise ApiError(404, "JOB_NOT_FOUND", f"job {job_id} not found", {"job_id": job_id})
    return wf


@router.post("/jobs", status_code=201, response_model=JobCreated)
def create_job(user: CurrentUser, session: SessionDep, body: JobCreateBody = Body(...)) -> dict:
    """Start a fine-tune from a document-003 `config` (base_model, algorithm, rank, ..., dataset_id)."""
    config = body.get("config") if isinstance(body, dict) else None
    if not isinstance(config, dict):
        raise ApiError(400, "INVALID_CONFIG", "the body must be {\"config\": {...}}", {"field": "config"})
    try:
        step1, step2 = jobs.job_steps(session, user.id, config)
        wf = workflows.create(session, user.id, WorkflowName.FINE_TUNE, [step1, step2], trigger=True)
    except jobs.InvalidConfig as exc:
        raise ApiError(400, "INVALID_CONFIG", str(exc), exc.details) from exc
    except Invalid as exc:  # document 003 calls every bad config a 400 INVALID_CONFIG
        raise ApiError(400, "INVALID_CONFIG", exc.message, exc.details) from exc
    placed = session.get(Placement, wf.id)
    minutes = jobs.estimated_minutes(session, merged_data(stored_steps(session, wf.id)), placement.on_gpu(placed))
    return {"job_id": wf.id, "status": wf.status.lower(), "created_at": wf.created_at,
            "estimated_duration_minutes": minutes,
            "estimated_cost": placement.cost(placed, minutes * 60) if minutes is not None else None,
            "provider": placed.provider if placed else None, "resource_id": placed.resource_id if placed else None,
            "flow_run_id": wf.flow_run_id}


@router.get("/jobs", response_model=JobList)
def list_jobs(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing,
              status: str | None = Query(None)) -> dict:
    """Document 003's `{jobs, total}`, newest first, one page (`limit`, `offset`) read from the database."""
    stmt = workflows.listing(session, user.id, workflow_type=WorkflowName.FINE_TUNE, status=status)
    return paginate(session, stmt, page, lambda wf: job_view(session, wf), listing, JobOut,
                    lambda body: {"jobs": body["data"], "total": body["meta"]["total"], "limit": page.limit,
                                  "offset": page.offset})


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, user: CurrentUser, session: SessionDep) -> dict:
    wf = owned_job(session, user.id, job_id)
    refresh_status(session, [wf])
    return job_view(session, wf, detail=True)


@router.post("/jobs/{job_id}/cancel", response_model=JobCancelled)
def cancel_job(job_id: str, user: CurrentUser, session: SessionDep, background: BackgroundTasks) -> dict:
    """Cancel the job's run (as `POST /workflows/{id}/cancel`, compensation included)."""
    owned_job(session, user.id, job_id)
    wf = workflows.cancel(session, user.id, job_id)
    background.add_task(workflows.compensate_after_cancel, wf.id, wf.flow_run_id)
    return {"success": True, "job_id": job_id, "status": workflows.view(session, wf).status.lower()}


@router.get("/jobs/{job_id}/logs", response_model=None,
            responses={200: {"model": JobLogs, "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
def job_logs(job_id: str, request: Request, user: CurrentUser, session: SessionDep,
             lines: int | None = Query(None, ge=1, le=10_000), limit: int | None = Query(None, ge=1, le=10_000)):
    """JSON (`?lines=` / `?limit=`, documents 003 and 002) or, for `Accept: text/event-stream`, a live
    stream of `data: [HH:MM:SS] [LEVEL] message` events that resumes after `Last-Event-ID`."""
    wf = owned_job(session, user.id, job_id)
    if "text/event-stream" in request.headers.get("accept", ""):
        if not wf.flow_run_id:
            raise ApiError(409, "CONFLICT", f"job {job_id} has not started", {"status": wf.status})
        last = request.headers.get("last-event-id", "0")
        after = int(last) if last.isdigit() else 0
        return StreamingResponse(jobs.log_events(wf.flow_run_id, after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    logs = jobs.logs_of(wf.flow_run_id, lines or limit or 100) if wf.flow_run_id else []
    return {"job_id": job_id, "logs": [line.model_dump() for line in logs], "count": len(logs)}


@router.post("/jobs/{job_id}/logs", status_code=201, response_model=LogPushed)
def push_job_log(job_id: str, body: LogPush, user: CurrentUser, session: SessionDep) -> dict:
    """Push a log line (document 002) into the job's run logs on the Prefect server."""
    wf = owned_job(session, user.id, job_id)
    if not wf.flow_run_id:
        raise ApiError(409, "CONFLICT", f"job {job_id} has not started", {"status": wf.status})
    jobs.push_log(wf.flow_run_id, body.level, body.message, body.source)
    return {"job_id": job_id, "level": body.level.lower(), "message": body.message, "source": body.source}
