"""Health (`GET /`) and component status (`GET /api/v1/status`, document 001)."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import SessionDep
from weft import __version__
from weft.storage import get_storage

root = APIRouter(tags=["status"])
router = APIRouter(tags=["status"])


@root.get("/")
def health() -> dict:
    return {"status": "healthy", "message": "Welcome to weft", "version": __version__,
            "timestamp": datetime.now(timezone.utc).isoformat()}


def prefect_healthy() -> str | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True, httpx_settings={"timeout": 2}) as client:
        error = client.api_healthcheck()
    return None if error is None else str(error)


@router.get("/status")
def api_status(session: SessionDep) -> dict:
    checks = {"database": lambda: session.exec(text("SELECT 1")).one() and None,
              "storage": lambda: get_storage().exists("") and None,
              "prefect": prefect_healthy}
    body: dict = {"api": "operational", "issues": []}
    for name, check in checks.items():
        try:
            problem = check()
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        body[name] = "operational" if problem is None else "degraded"
        if problem:
            body["issues"].append({"component": name, "message": problem})
    return body
