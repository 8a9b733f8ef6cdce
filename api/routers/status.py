"""Health (`GET /`) and component status (`GET /api/v1/status`, document 001)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter
from sqlalchemy import text
from sqlmodel import Session

from api.deps import SessionDep
from weft import __version__
from weft.clock import utcnow
from weft.db import database_unavailable
from weft.schemas.status import ComponentIssue, Health, State, Status
from weft.storage import get_storage

root = APIRouter(tags=["status"])
log = logging.getLogger(__name__)
router = APIRouter(tags=["status"])
PREFECT_TIMEOUT_SECONDS = 2.0


@root.get("/", response_model=Health)
def health() -> Health:
    """Liveness: the API process answers."""
    return Health(status="healthy", message="Welcome to weft", version=__version__,
                  timestamp=utcnow())


def check_database(session: Session) -> str | None:
    session.connection().execute(text("SELECT 1")).one()
    return None


def check_storage() -> str | None:
    storage = get_storage()
    return None if storage.exists("") else f"storage root {storage.root} is not reachable"


def check_prefect() -> str | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True, httpx_settings={"timeout": PREFECT_TIMEOUT_SECONDS}) as client:
        error = client.api_healthcheck()
        return None if error is None else f"Prefect API at {client.api_url} is unhealthy: {error}"


@router.get("/status", response_model=Status)
def api_status(session: SessionDep) -> Status:
    """Check each component for real; a failing one is `degraded` with its reason in `issues`."""
    checks: dict[str, Callable[[], str | None]] = {
        "database": lambda: check_database(session), "storage": check_storage, "prefect": check_prefect}
    states: dict[str, State] = {}
    issues: list[ComponentIssue] = []
    for name, check in checks.items():
        try:
            problem = check()
        except Exception as exc:  # the kind of failure only: driver messages stay in the log
            log.warning("status check %s failed: %s", name, exc)
            problem = "unavailable" if database_unavailable(exc) else f"check failed ({type(exc).__name__})"
        states[name] = "operational" if problem is None else "degraded"
        if problem is not None:
            issues.append(ComponentIssue(component=name, message=problem))
    return Status(api="operational", issues=issues, **states)
