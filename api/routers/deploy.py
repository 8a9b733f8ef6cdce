"""Document 001's classic-model deploy: `POST /deploy` (a new deployment, or a new version of the one
named) and `POST /deployments/{id}/versions` (a new version), both multipart uploads."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError, too_large
from weft.classic import deployments
from weft.datasets.uploads import TooLarge
from weft.schemas.classic import ClassicDeployCreated
from weft.serving.urls import endpoint_url
from weft.settings import get_settings
from weft.statuses import EndpointKind
from weft.tables import Endpoint

router = APIRouter(tags=["deployments"])
MULTIPART_SLACK = 128 * 1024  # form fields, the requirements file and part headers around the model file
LIMITS = {"memory": (256, 262_144), "timeout": (1, 3600)}


def number(form, field: str) -> int | None:
    """An optional integer form field within LIMITS (422 VALIDATION_ERROR otherwise)."""
    raw = form.get(field)
    if raw in (None, ""):
        return None
    low, high = LIMITS[field]
    if not isinstance(raw, str) or not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise ApiError(422, "VALIDATION_ERROR", f"{field} must be a whole number from {low} to {high}",
                       {"field": field, "value": str(raw)[:50]})
    return int(raw)


def text(form, field: str, limit: int) -> str | None:
    raw = form.get(field)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str) or len(raw) > limit:
        raise ApiError(422, "VALIDATION_ERROR", f"{field} must be text of at most {limit} characters",
                       {"field": field})
    return raw.strip()


async def upload(request: Request, user_id: str, session, endpoint: Endpoint | None) -> dict:
    cap = get_settings().max_upload_mb * 2**20
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + MULTIPART_SLACK:
        raise too_large(cap)
    form = await request.form(max_files=2, max_fields=10)
    files = {}
    for field in ("model_file", "requirements_file"):
        part = form.get(field)
        if not isinstance(part, UploadFile) or not part.filename:
            raise ApiError(422, "VALIDATION_ERROR", f"a multipart file {field!r} is required", {"field": field})
        files[field] = part
    name = text(form, "name", 100)
    if endpoint is None and name is not None and not deployments.NAME.fullmatch(name):
        raise ApiError(422, "VALIDATION_ERROR", "name may hold letters, digits, spaces and . : / _ -",
                       {"field": "name"})
    try:
        requirements = deployments.read_requirements(files["requirements_file"].file)
        started = await run_in_threadpool(
            lambda: deployments.start_deploy(
                session, user_id, model_stream=files["model_file"].file, file_name=files["model_file"].filename,
                requirements=requirements, name=name, memory_mb=number(form, "memory"),
                timeout_seconds=number(form, "timeout"), changes=text(form, "changes", 1000), endpoint=endpoint))
    except TooLarge as exc:
        raise too_large(cap) from exc
    finally:
        for part in files.values():
            await part.close()
    ep, wf = started.endpoint, started.workflow
    return {"id": ep.id, "name": ep.name, "status": "building", "created_at": started.model.created_at,
            "model_metadata": deployments.model_metadata(started.model), "version": started.version,
            "workflow_id": wf.id, "flow_run_id": wf.flow_run_id, "endpoint_url": endpoint_url(ep)}


@router.post("/deploy", status_code=status.HTTP_202_ACCEPTED, response_model=ClassicDeployCreated)
async def deploy(request: Request, user: CurrentUser, session: SessionDep) -> dict:
    """multipart: model_file (.pkl .joblib .pt .pth .keras .h5), requirements_file, optional name, memory (MB,
    default 1024), timeout (s, default 30), changes. A name you deployed before gets a new version."""
    return await upload(request, user.id, session, None)


@router.post("/deployments/{deployment_id}/versions", status_code=status.HTTP_202_ACCEPTED,
             response_model=ClassicDeployCreated)
async def add_version(deployment_id: str, request: Request, user: CurrentUser, session: SessionDep) -> dict:
    """The same form as POST /deploy: the upload becomes the deployment's next version (`changes` says what
    it changes); it takes all traffic once healthy, and POST .../rollback goes back."""
    endpoint = get_owned(session, Endpoint, deployment_id, user.id, "deployment")
    if endpoint.kind != EndpointKind.CLASSIC:
        raise ApiError(400, "INVALID_INPUT", f"deployment {endpoint.name} serves an LLM: deploy its new version "
                       "with POST /api/v1/deployments or /models/{id}/deploy", {"field": "deployment_id"})
    return await upload(request, user.id, session, endpoint)
