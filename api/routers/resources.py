"""Compute resources of the connected platforms, with prices and live availability (document 003)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import CurrentUser, SessionDep
from api.paging import Listing, arranged, listed
from weft.compute import resources
from weft.schemas.platforms import Resource, ResourceList, ResourcePricing

router = APIRouter(tags=["platforms"])


@router.get("/resources", response_model=ResourceList)
def resource_list(user: CurrentUser, session: SessionDep, listing: Listing, provider: str | None = Query(None),
                   available: bool | None = Query(None)) -> dict:
    """The resources of every connected platform (or of `provider`), optionally only available ones."""
    found = resources.list_resources(session, provider, available)
    return listed({"resources": arranged(found, listing, Resource)}, listing)


@router.get("/resources/{provider}/{resource_id}/pricing", response_model=ResourcePricing)
def resource_pricing(provider: str, resource_id: str, user: CurrentUser, session: SessionDep) -> dict:
    """Price, and availability now: online matching workers, runs waiting in the pool, the expected wait."""
    resource = resources.get_resource(session, provider, resource_id)
    return {"resource_id": resource.id, "provider": provider, "pricing": resource.pricing,
            "availability": resources.availability(resource)}
