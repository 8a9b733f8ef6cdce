"""The seeded cloud-provider catalog."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func
from sqlmodel import select

from api.deps import CurrentUser, SessionDep
from api.errors import not_found
from api.paging import Paging, page_response
from weft.tables import CloudModel, Provider

router = APIRouter(prefix="/providers", tags=["providers"])


@router.get("")
def list_providers(_: CurrentUser, session: SessionDep, page: Paging) -> dict:
    total = session.exec(select(func.count()).select_from(Provider)).one()
    rows = session.exec(select(Provider).order_by(Provider.name).offset(page.offset).limit(page.limit))
    return page_response([r.model_dump() for r in rows], total, page)


@router.get("/{provider_id}/cloud-models")
def list_cloud_models(provider_id: str, _: CurrentUser, session: SessionDep, page: Paging) -> dict:
    if session.get(Provider, provider_id) is None:
        raise not_found("provider", provider_id)
    stmt = select(CloudModel).where(CloudModel.provider_id == provider_id)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(CloudModel.name).offset(page.offset).limit(page.limit))
    return page_response([r.model_dump() for r in rows], total, page)
