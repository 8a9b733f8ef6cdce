"""Adapters (document 003): the caller's trained and uploaded adapters, and `POST /adapters/upload`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import CurrentUser, SessionDep
from api.errors import ApiError, too_large
from api.paging import Listing, Paging, paginate
from weft.datasets.uploads import TooLarge
from weft.errors import Invalid
from weft.registry.adapter_files import AdapterMetadata
from weft.registry.adapter_uploads import register_upload
from weft.schemas.adapters import AdapterList, AdapterOut, AdapterUploaded
from weft.settings import get_settings
from weft.tables import Adapter, Model

router = APIRouter(tags=["adapters"])
MULTIPART_SLACK = 64 * 1024  # the metadata field and part headers around the file


def adapter_view(session: Session, adapter: Adapter) -> dict[str, Any]:
    base = session.get(Model, adapter.base_model_id)
    config = adapter.config or {}
    return {**adapter.model_dump(), "job_id": adapter.workflow_id, "base_model": base.name if base else adapter.base_model_id,
            "algorithm": adapter.method, "path": adapter.storage_key,
            "metadata": {"rank": config.get("rank"), "alpha": config.get("lora_alpha"),
                         "target_modules": list(config.get("target_modules") or [])}}


@router.get("/adapters", response_model=AdapterList)
def list_adapters(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing,
                  job_id: str | None = Query(None, description="the fine-tune job that trained it")) -> Any:
    """The caller's adapters, newest first (`?job_id=` for one job's)."""
    stmt = select(Adapter).where(Adapter.user_id == user.id)
    if job_id:
        stmt = stmt.where(Adapter.workflow_id == job_id)
    return paginate(session, stmt.order_by(col(Adapter.created_at).desc(), col(Adapter.id)), page,
                    lambda a: AdapterOut.model_validate(adapter_view(session, a)), listing, AdapterOut,
                    envelope=lambda body: {"adapters": body["data"], **body})


@router.post("/adapters/upload", status_code=201, response_model=AdapterUploaded)
async def upload_adapter(request: Request, user: CurrentUser, session: SessionDep) -> dict:
    """A peft adapter as one `.safetensors` file (`file`) with JSON `metadata` (base_model, rank, alpha,
    target_modules, algorithm): header and scan checked, shapes checked against the base model, registered as an
    adapter and a fine-tuned model."""
    cap = get_settings().max_upload_mb * 2**20
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + MULTIPART_SLACK:
        raise too_large(cap)
    form = await request.form(max_files=1, max_fields=2)
    part, raw = form.get("file"), form.get("metadata")
    if not isinstance(part, UploadFile) or not part.filename:
        raise ApiError(422, "VALIDATION_ERROR", "a multipart file 'file' (.safetensors) is required", {"field": "file"})
    if not part.filename.endswith(".safetensors"):
        raise ApiError(400, "INVALID_INPUT", f"{part.filename}: an adapter is uploaded as a .safetensors file",
                       {"field": "file"})
    if not isinstance(raw, str):
        raise ApiError(422, "VALIDATION_ERROR", "a JSON form field 'metadata' is required", {"field": "metadata"})
    try:
        metadata = AdapterMetadata.model_validate_json(raw)
    except ValidationError as exc:
        raise Invalid.of(exc, "invalid adapter metadata") from exc
    try:
        adapter, model, shape = await run_in_threadpool(register_upload, session, user.id, part.file, metadata, cap)
    except TooLarge:
        raise too_large(cap) from None
    return {"adapter_id": adapter.id, "model_id": model.id, "registry_url": None, "success": True,
            "path": adapter.storage_key, "trainable_parameters": shape.trainable_parameters,
            "message": f"registered {adapter.name} ({shape.rank}-rank {adapter.method} on {len(shape.modules)} modules "
                       f"of {model.base_model}) as model {model.id}; registry_url is null because weft does not push "
                       "uploads to a hub"}
