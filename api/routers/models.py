"""The model registry (documents 000 and 002): list, read, create, update, delete, download as a ZIP, export,
and the security scan with its override.

Models are also added by the step-workflow API (`POST /api/v1/models/local-model-workflow`, ...), which the
workflows router serves, and by fine-tunes and adapter uploads.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlmodel import Session, col, exists, select
from starlette.convertors import Convertor, register_url_convertor

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Listing, Paging, paginate
from weft.clock import as_utc, utcnow
from weft.registry import exports, records, search, views
from weft.registry.archive import stream_zip
from weft.registry.bundle import members
from weft.registry.records import ADAPTER_TYPES, MODEL_TYPES, ModelFields
from weft.registry.search import Searched
from weft.schemas.models import (
    ExportStarted,
    ModelDeleted,
    ModelDetail,
    ModelFacts,
    ModelOut,
    ModelPage,
    ModelRecord,
    ModelSummary,
    ScanOverrideIn,
    SecurityScanOut,
)
from weft.specs.export import ExportOptions
from weft.storage import Storage, get_storage
from weft.tables import Adapter, Model

router = APIRouter(prefix="/models", tags=["models"])


class SourceConvertor(Convertor):
    """A model source in a path (`/models/{source}/{model_id}`): only the fixed names, so these routes never
    shadow `/models/{id}/...`."""

    regex = "|".join(search.SOURCES)

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model_source", SourceConvertor())


def _date(value: str | None, field: str, end: bool) -> datetime | None:
    """An ISO date (the whole day) or datetime; 422 naming the parameter otherwise."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return as_utc(datetime.combine(day, time.max if end else time.min))
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: {field} must be an ISO 8601 date or datetime",
                       {"parameter": field, "constraint": "YYYY-MM-DD or ISO 8601 datetime"}) from None


def _record(session: Session, storage: Storage, model: Model, request: Request | None = None) -> dict[str, Any]:
    """The row with document 002's fields: as recorded (lists), or checked against storage with links."""
    view = views.detail(session, storage, model, str(request.base_url)) if request else \
        views.summary(session, storage, model)
    return {**model.model_dump(), **view}


@router.get("", response_model=ModelPage)
def list_models(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing,
                type: str | None = Query(None, description=f"one of {', '.join(MODEL_TYPES)}"),
                status: str | None = Query(None, description="active (= ready) | uploading | error"),
                base_model: str | None = Query(None, description="the base model's name or id"),
                job_id: str | None = Query(None, description="the fine-tune job that produced it"),
                date_from: str | None = Query(None, description="created at or after (ISO date or datetime)"),
                date_to: str | None = Query(None, description="created at or before (ISO date or datetime)"),
                modality: str | None = Query(None, description="e.g. llm"),
                name: str | None = Query(None, description="substring of the name, case-insensitive")) -> Any:
    """The caller's models, newest first: document 000's `{data, meta}` and document 002's `{total, page,
    limit}`, with `sort`, `order` and `fields`."""
    stmt = select(Model).where(Model.user_id == user.id)
    if type is not None:
        if type not in MODEL_TYPES:
            raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: type must be one of {', '.join(MODEL_TYPES)}",
                           {"parameter": "type", "constraint": "|".join(MODEL_TYPES)})
        if type in ADAPTER_TYPES:
            stmt = stmt.where(exists().where(Adapter.model_id == Model.id, Adapter.method == type))
        else:
            stmt = stmt.where(Model.type == type)
    if status is not None:
        stmt = stmt.where(Model.status == records.model_status(status))
    if base_model:
        base_ids = select(Adapter.model_id).where(Adapter.base_model_id == base_model)
        stmt = stmt.where((Model.base_model == base_model) | col(Model.id).in_(base_ids))
    if job_id:
        stmt = stmt.where(Model.workflow_id == job_id)
    start, end = _date(date_from, "date_from", end=False), _date(date_to, "date_to", end=True)
    if start and end and start > end:
        raise ApiError(422, "VALIDATION_ERROR", "Invalid parameter: date_from is after date_to",
                       {"parameter": "date_from", "constraint": "<= date_to"})
    if start:
        stmt = stmt.where(Model.created_at >= start)
    if end:
        stmt = stmt.where(Model.created_at <= end)
    if modality:
        stmt = stmt.where(Model.modality == modality)
    if name:
        stmt = stmt.where(col(Model.name).icontains(name, autoescape=True))
    storage = get_storage()
    return paginate(session, stmt.order_by(col(Model.created_at).desc(), col(Model.id)), page,
                    lambda m: ModelSummary.model_validate(_record(session, storage, m)), listing, ModelSummary,
                    envelope=lambda body: {**body, "total": body["meta"]["total"], "page": page.page,
                                           "limit": page.limit})


@router.get("/search", response_model=Searched)
def search_models(user: CurrentUser, session: SessionDep, q: str = Query("", max_length=200, description="part of "
                                                                                                    "the name or id"),
                  source: str | None = Query(None, description=f"one of {', '.join(search.SOURCES)}"),
                  limit: int = Query(20, ge=1, le=100)) -> Searched:
    """Document 003's search: the caller's registry, the local Hugging Face cache (and the Hub when reachable;
    `notes` says when it was not) and the cloud catalog."""
    if source is not None and source not in search.SOURCES:
        raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: source must be one of {', '.join(search.SOURCES)}",
                       {"parameter": "source", "constraint": "|".join(search.SOURCES)})
    return search.search(session, user.id, q, source, limit)


@router.get("/{source:model_source}/{model_id:path}", response_model=ModelFacts)
def model_facts(source: str, model_id: str, user: CurrentUser, session: SessionDep) -> dict:
    """Document 003's model details from a source (`registry`, `huggingface`, `catalog`): size, license,
    architecture, context length, hardware requirements (weft.hardware) and compatible algorithms."""
    return search.details(session, user.id, source, model_id)


@router.post("", status_code=201, response_model=ModelRecord)
def create_model_record(body: ModelFields, user: CurrentUser, session: SessionDep) -> dict:
    """A record of storage the caller owns (document 002): their models', adapters' or exports' folders."""
    storage = get_storage()
    return _record(session, storage, records.create(session, storage, user.id, body))


@router.get("/{model_id}/security-scan", response_model=SecurityScanOut)
def get_security_scan(model_id: str, user: CurrentUser, session: SessionDep) -> SecurityScanOut:
    """The last security scan of the model (status, issues by severity, findings)."""
    model = get_owned(session, Model, model_id, user.id, "model")
    if model.scan is None:
        raise ApiError(404, "NOT_FOUND", f"model {model_id} has not been scanned yet",
                       {"resource": "security-scan", "id": model_id})
    return SecurityScanOut.model_validate({**model.scan, "model_id": model.id, "scan_verified": model.scan_verified,
                                           "scan_override": model.scan_override})


@router.post("/{model_id}/security-scan/override", response_model=ModelOut)
def override_security_scan(model_id: str, body: ScanOverrideIn, user: CurrentUser, session: SessionDep) -> dict:
    """Record that this user allows deploying a model whose scan is not SAFE, and why."""
    model = get_owned(session, Model, model_id, user.id, "model")
    if model.scan is None or model.scan_verified:
        state = "has not been scanned" if model.scan is None else "is already SAFE"
        raise ApiError(409, "CONFLICT", f"model {model_id} {state}: there is nothing to override",
                       {"scan_verified": model.scan_verified})
    model.scan_override = {"user_id": user.id, "username": user.username, "reason": body.reason,
                           "scan_status": model.scan["status"], "at": utcnow().isoformat()}
    session.add(model)
    session.commit()
    return _record(session, get_storage(), model)


@router.get("/{model_id}", response_model=ModelDetail)
def get_model(model_id: str, request: Request, user: CurrentUser, session: SessionDep) -> dict:
    """One model (document 000's fields flat, document 002's record under `model`) with its files and
    download links that need no token and expire after 24 h; another user's model is 404."""
    model = get_owned(session, Model, model_id, user.id, "model")
    record = _record(session, get_storage(), model, request)
    return {**record, "model": record}


@router.put("/{model_id}", response_model=ModelRecord)
def update_model(model_id: str, body: ModelFields, user: CurrentUser, session: SessionDep) -> dict:
    """Change name, description, status, metrics or paths, validated as on create (document 002)."""
    storage = get_storage()
    model = get_owned(session, Model, model_id, user.id, "model")
    return _record(session, storage, records.update(session, storage, model, body))


@router.delete("/{model_id}", response_model=ModelDeleted)
def delete_model(model_id: str, user: CurrentUser, session: SessionDep) -> dict:
    """Remove the record and its bytes; a deployed model (or the base of a fine-tune) is a 409."""
    model = get_owned(session, Model, model_id, user.id, "model")
    removed = records.delete(session, get_storage(), model)
    return {"message": "Model deleted successfully", "id": model_id, "removed": removed}


def _download_headers(model: Model) -> dict[str, str]:
    return {"Content-Disposition": f"attachment; filename=model-{model.id}-{utcnow():%Y%m%d}.zip",
            "Cache-Control": "no-store"}


@router.head("/{model_id}/download", response_class=Response)
def download_model_head(model_id: str, user: CurrentUser, session: SessionDep) -> Response:
    """The download's headers (`curl -I`); the ZIP is built only by GET."""
    model = get_owned(session, Model, model_id, user.id, "model")
    return Response(media_type="application/zip", headers=_download_headers(model))


@router.get("/{model_id}/download", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the model's ZIP, streamed"}})
def download_model(model_id: str, user: CurrentUser, session: SessionDep) -> StreamingResponse:
    """The model as a ZIP streamed while it is built (document 002): `<id>/lora_adapters/`, `<id>/gguf/`,
    `<id>/merged/` or `<id>/model/`, `<id>/metrics.json`, `<id>/README.md` (a Hugging Face model card)."""
    model = get_owned(session, Model, model_id, user.id, "model")
    parts = list(members(session, get_storage(), model))  # listed before streaming: a missing file is a 5xx, not a cut ZIP
    return StreamingResponse(stream_zip(parts), media_type="application/zip", headers=_download_headers(model))


@router.post("/{model_id}/export", status_code=202, response_model=ExportStarted)
def export_model(model_id: str, body: ExportOptions, user: CurrentUser, session: SessionDep) -> dict:
    """Start the export_model workflow: merged safetensors, or a GGUF (f16, q8_0, ...) verified against the
    merged model; K-quants need llama.cpp's `llama-quantize` (422 without it)."""
    model = get_owned(session, Model, model_id, user.id, "model")
    return exports.start(session, user.id, model, body)
