"""The seeded cloud-provider catalog."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import select

from api.deps import CurrentUser, SessionDep
from api.errors import not_found
from api.paging import Paging, paginate
from weft.tables import CloudModel, Provider

router = APIRouter(prefix="/providers", tags=["providers"])


@router.get("")
def list_providers(_: CurrentUser, session: SessionDep, page: Paging) -> dict:
    return paginate(session, select(Provider).order_by(Provider.name), page, lambda r: r.model_dump())


@router.get("/{provider_id}/cloud-models")
def list_cloud_models(provider_id: str, _: CurrentUser, session: SessionDep, page: Paging) -> dict:
    if session.get(Provider, provider_id) is None:
        raise not_found("provider", provider_id)
    stmt = select(CloudModel).where(CloudModel.provider_id == provider_id).order_by(CloudModel.name)
    return paginate(session, stmt, page, lambda r: r.model_dump())
