"""The model registry (document 000: List Models, Get Model).

Models are added by the step-workflow API (`POST /api/v1/models/local-model-workflow`, ...), which
the workflows router serves; this router reads them, their security scan, and records scan overrides.
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Page, Paging, paginate
from api.schemas.models import ModelOut, ModelSummary, ScanOverrideIn, SecurityScanOut
from weft.clock import utcnow
from weft.tables import Model

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=Page[ModelSummary])
def list_models(user: CurrentUser, session: SessionDep, page: Paging,
                type: str | None = Query(None, description="base | fine-tuned | cloud"),
                status: str | None = Query(None, description="e.g. active"),
                modality: str | None = Query(None, description="e.g. llm"),
                name: str | None = Query(None, description="substring of the name, case-insensitive")) -> dict:
    """The caller's models, newest first."""
    stmt = select(Model).where(Model.user_id == user.id)
    for column, value in ((Model.type, type), (Model.status, status), (Model.modality, modality)):
        if value:
            stmt = stmt.where(column == value)
    if name:
        stmt = stmt.where(col(Model.name).icontains(name, autoescape=True))
    stmt = stmt.order_by(col(Model.created_at).desc(), col(Model.id))
    return paginate(session, stmt, page, ModelSummary.model_validate)


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
def override_security_scan(model_id: str, body: ScanOverrideIn, user: CurrentUser, session: SessionDep) -> ModelOut:
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
    return ModelOut.model_validate(model)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, user: CurrentUser, session: SessionDep) -> ModelOut:
    """One model with its metrics, parameters and extracted metadata; another user's model is 404."""
    return ModelOut.model_validate(get_owned(session, Model, model_id, user.id, "model"))
