"""The model registry (document 000: List Models, Get Model).

Models are added by the step-workflow API (`POST /api/v1/models/local-model-workflow`, ...), which
the workflows router serves; this router only reads.
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.paging import Page, Paging, paginate
from api.schemas import ModelOut, ModelSummary
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


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, user: CurrentUser, session: SessionDep) -> ModelOut:
    """One model with its metrics, parameters and extracted metadata; another user's model is 404."""
    return ModelOut.model_validate(get_owned(session, Model, model_id, user.id, "model"))
