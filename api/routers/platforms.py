"""Compute platforms (document 003): list, connect a GPU cloud by API key, disconnect it."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, SessionDep
from api.paging import Listing, arranged, listed
from weft.compute import platforms
from weft.compute.platforms import PlatformView
from weft.schemas.platforms import PlatformConnect, PlatformConnected, PlatformDisconnected, PlatformList

router = APIRouter(tags=["platforms"])


@router.get("/platforms", response_model=PlatformList)
def platform_list(user: CurrentUser, session: SessionDep, listing: Listing) -> dict:
    """local, kubernetes and the GPU clouds of the catalog, each with its connection status."""
    return listed({"platforms": arranged(platforms.list_platforms(session), listing, PlatformView)}, listing)


@router.post("/platforms/{platform_name}/connect", response_model=PlatformConnected)
def connect_platform(platform_name: str, body: PlatformConnect, user: CurrentUser, session: SessionDep) -> dict:
    """Check the key with the cloud's API, keep it in a Secret block, create the platform's work pool;
    502 PLATFORM_NOT_CONNECTED with the cloud's message when the check fails."""
    row = platforms.connect(session, user.id, platform_name, body.credentials)
    return {"success": True, "platform": row.name, "status": row.status, "pool": row.pool_name}


@router.delete("/platforms/{platform_name}", response_model=PlatformDisconnected)
def disconnect_platform(platform_name: str, user: CurrentUser, session: SessionDep) -> dict:
    """Remove the platform's work pool (with its deployments) and its Secret block."""
    platforms.disconnect(session, platform_name)
    return {"success": True, "message": "Platform disconnected"}
