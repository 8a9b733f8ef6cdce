"""The seeded cloud-provider catalog (weft/catalog/providers.yaml)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import col, select

from api.deps import CurrentUser, SessionDep
from api.errors import not_found
from api.paging import Listing, Paging, paginate
from weft.schemas.common import Page
from weft.schemas.providers import CloudModelOut, ProviderOut
from weft.tables import CloudModel, Provider

router = APIRouter(prefix="/providers", tags=["providers"])


@router.get("", response_model=Page[ProviderOut])
def list_providers(_: CurrentUser, session: SessionDep, page: Paging, listing: Listing) -> dict:
    return paginate(session, select(Provider).order_by(col(Provider.name)), page, ProviderOut.model_validate,
                    listing, ProviderOut)


@router.get("/{provider_id}/cloud-models", response_model=Page[CloudModelOut])
def list_cloud_models(provider_id: str, _: CurrentUser, session: SessionDep, page: Paging,
                      listing: Listing) -> dict:
    """The models a provider serves; an unknown provider is 404."""
    if session.get(Provider, provider_id) is None:
        raise not_found("provider", provider_id)
    stmt = select(CloudModel).where(CloudModel.provider_id == provider_id).order_by(col(CloudModel.name))
    return paginate(session, stmt, page, CloudModelOut.model_validate, listing, CloudModelOut)
