"""The model registry (document 000: List Models, Get Model)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import CurrentUser, SessionDep
from api.errors import not_found
from api.paging import Paging, paginate
from api.schemas import ModelOut, ModelSummary
from weft.tables import Model

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(user: CurrentUser, session: SessionDep, page: Paging, type: str | None = Query(None),
                status: str | None = Query(None), modality: str | None = Query(None),
                name: str | None = Query(None, description="substring of the name")) -> dict:
    stmt = select(Model).where(Model.user_id == user.id)
    for column, value in ((Model.type, type), (Model.status, status), (Model.modality, modality)):
        if value:
            stmt = stmt.where(column == value)
    if name:
        stmt = stmt.where(col(Model.name).contains(name))
    return paginate(session, stmt.order_by(col(Model.created_at).desc()), page,
                    lambda m: ModelSummary.model_validate(m, from_attributes=True).model_dump(mode="json"))


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, user: CurrentUser, session: SessionDep) -> ModelOut:
    model = session.get(Model, model_id)
    if model is None or model.user_id != user.id:
        raise not_found("model", model_id)
    return ModelOut.model_validate(model, from_attributes=True)
