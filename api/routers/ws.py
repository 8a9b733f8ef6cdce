"""`WS /ws/jobs/{job_id}` (document 003): status, metrics, log and error messages of a training job,
followed from the Prefect server (the same source as the log endpoints)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlmodel import Session

from api.deps import user_of_api_key, user_of_token
from api.errors import ApiError
from api.security import API_KEY_PREFIX
from weft import jobs
from weft.clock import utcnow
from weft.db import get_engine
from weft.specs.names import WorkflowName
from weft.statuses import RETRYABLE
from weft.tables import User, Workflow
from weft.training.progress import parse_line

router = APIRouter(tags=["jobs"])
POLICY_VIOLATION = 1008


def ws_user(session: Session, websocket: WebSocket) -> User:
    """Credentials as on HTTP (`X-API-Key`, `Authorization: Bearer`), or `?api_key=` / `?token=` for
    browsers, which cannot set headers on a WebSocket."""
    key = websocket.headers.get("x-api-key") or websocket.query_params.get("api_key")
    auth = websocket.headers.get("authorization", "")
    token = auth[7:] if auth.lower().startswith("bearer ") else websocket.query_params.get("token")
    if not key and token and token.startswith(API_KEY_PREFIX):
        key = token
    if key:
        return user_of_api_key(session, key)
    if not token:
        raise ApiError(401, "UNAUTHORIZED", "missing credentials")
    return user_of_token(session, token)


def now() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


def messages(job_id: str, update: jobs.Update) -> list[dict[str, Any]]:
    """Document 003's messages for one update of the run."""
    if update.status is not None:
        out = [{"type": "status", "job_id": job_id, "status": update.status.lower(), "timestamp": now()}]
        if update.status in RETRYABLE:
            out.append({"type": "error", "job_id": job_id, "error": f"job {update.status.lower()}",
                        "details": update.reason or "", "timestamp": now()})
        return out
    line = update.line
    out = [{"type": "log", "job_id": job_id, "level": line.level, "message": line.message, "timestamp": line.timestamp}]
    if (metrics := parse_line(line.message)) is not None:
        out.append({"type": "metrics", "job_id": job_id, "metrics": metrics, "timestamp": line.timestamp})
    return out


@router.websocket("/ws/jobs/{job_id}")
async def job_updates(websocket: WebSocket, job_id: str) -> None:
    """Streams the job's updates until it has finished, then closes normally."""
    with Session(get_engine()) as session:
        try:
            user = ws_user(session, websocket)
        except ApiError as exc:
            await websocket.close(code=POLICY_VIOLATION, reason=exc.message)
            return
        wf = session.get(Workflow, job_id)
        if wf is None or wf.user_id != user.id or wf.workflow_type != WorkflowName.FINE_TUNE:
            await websocket.close(code=POLICY_VIOLATION, reason=f"job {job_id} not found")
            return
    await websocket.accept()
    while wf.flow_run_id is None:  # created through the step API and not triggered yet
        await websocket.send_json({"type": "status", "job_id": job_id, "status": wf.status.lower(), "timestamp": now()})
        await anyio.sleep(2)
        with Session(get_engine()) as session:
            wf = session.get(Workflow, job_id)
    updates = jobs.follow(wf.flow_run_id)
    try:
        while (update := await anyio.to_thread.run_sync(next, updates, None)) is not None:
            for message in messages(job_id, update):
                await websocket.send_json(message)
        await websocket.close()
    except WebSocketDisconnect:
        pass
    finally:
        updates.close()
