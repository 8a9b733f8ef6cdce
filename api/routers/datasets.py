"""Datasets (document 000): streamed upload, list, get, delete, analyze, analysis."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Body, Request, status
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError, too_large
from api.paging import Listing, Paging, paginate
from weft import workflows
from weft.datasets.formats import UnsupportedFileType, file_type_of
from weft.datasets.uploads import TooLarge, store_upload, validate_dataset
from weft.schemas.common import Page
from weft.schemas.datasets import AnalysisOptionsBody, AnalysisOut, AnalysisStarted, DatasetOut
from weft.settings import get_settings
from weft.specs.names import WorkflowName
from weft.statuses import DatasetStatus
from weft.storage import get_storage
from weft.tables import Dataset, new_id

router = APIRouter(prefix="/datasets", tags=["datasets"])
MULTIPART_SLACK = 64 * 1024  # form fields and part headers around the file


def owned(session, user_id: str, dataset_id: str) -> Dataset:
    return get_owned(session, Dataset, dataset_id, user_id, "dataset")


@router.post("/upload", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
async def upload_dataset(request: Request, user: CurrentUser, session: SessionDep,
                         background: BackgroundTasks) -> DatasetOut:
    """multipart: name, description, file (.jsonl, .json, .csv, .parquet). Validation runs after the reply."""
    cap = get_settings().max_upload_mb * 2**20
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + MULTIPART_SLACK:
        raise too_large(cap)  # refused before reading the body
    form = await request.form(max_files=1, max_fields=10)
    file, name = form.get("file"), form.get("name")
    if not isinstance(file, UploadFile) or not file.filename:
        raise ApiError(422, "VALIDATION_ERROR", "a multipart 'file' is required", {"field": "file"})
    if not isinstance(name, str) or not name.strip():
        raise ApiError(422, "VALIDATION_ERROR", "a 'name' is required", {"field": "name"})
    try:
        file_type = file_type_of(file.filename)
    except UnsupportedFileType as exc:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", str(exc), {"file": file.filename}) from exc
    dataset_id = new_id()
    key = f"datasets/{dataset_id}/{dataset_id}.{file_type}"
    try:
        size, sha256 = await run_in_threadpool(store_upload, file.file, key, cap)
    except TooLarge as exc:
        raise too_large(cap) from exc
    finally:
        await file.close()
    description = form.get("description")
    ds = Dataset(id=dataset_id, user_id=user.id, name=name.strip(), file_name=file.filename, file_type=file_type,
                 description=description if isinstance(description, str) else None, storage_key=key,
                 size_bytes=size, fingerprint=sha256, status=DatasetStatus.PROCESSING)
    session.add(ds)
    try:
        session.commit()
    except Exception:  # no row, so nothing would point at the stored file: remove it
        session.rollback()
        await run_in_threadpool(get_storage().delete, f"datasets/{dataset_id}")
        raise
    background.add_task(validate_dataset, ds.id)
    return DatasetOut.of(ds)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing) -> dict:
    stmt = select(Dataset).where(Dataset.user_id == user.id).order_by(col(Dataset.created_at).desc())
    return paginate(session, stmt, page, DatasetOut.of, listing, DatasetOut)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, user: CurrentUser, session: SessionDep) -> DatasetOut:
    return DatasetOut.of(owned(session, user.id, dataset_id))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: str, user: CurrentUser, session: SessionDep) -> None:
    ds = owned(session, user.id, dataset_id)
    get_storage().delete(f"datasets/{ds.id}")
    session.delete(ds)
    session.commit()


@router.post("/{dataset_id}/analyze", response_model=AnalysisStarted)
def analyze_dataset(dataset_id: str, user: CurrentUser, session: SessionDep,
                    options: AnalysisOptionsBody | None = Body(default=None)) -> dict:
    """Start the analyze_dataset workflow with default (or the given) options."""
    ds = owned(session, user.id, dataset_id)
    if options is not None and not isinstance(options, dict):
        raise ApiError(422, "VALIDATION_ERROR", "the request body must be a JSON object")
    wf = workflows.create(session, user.id, WorkflowName.ANALYZE_DATASET, [{"dataset_id": ds.id}, options or {}],
                          trigger=True)
    return {"id": ds.id, "workflow_id": wf.id, "status": wf.status, "flow_run_id": wf.flow_run_id,
            "analysis": ds.analysis}


@router.get("/{dataset_id}/analysis", response_model=AnalysisOut)
def get_analysis(dataset_id: str, user: CurrentUser, session: SessionDep) -> dict:
    ds = owned(session, user.id, dataset_id)
    if ds.analysis is None:
        raise ApiError(404, "NOT_FOUND", f"dataset {dataset_id} has not been analysed yet",
                       {"resource": "analysis", "id": dataset_id})
    return {"id": ds.id, "workflow_id": ds.analysis_workflow_id, "analysis": ds.analysis, "splits": ds.splits}

