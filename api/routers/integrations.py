"""Integrations with third-party services: RelayCore (document 000). A user's connector (base URL + API
key) lives in a Prefect Secret block (`weft.integrations.connector`); vehicles are read live from RelayCore
and recommendations sent to it; `.../recommendations-workflow` is the step API of the workflow that writes
them with a deployed model. HTTP only: the work is weft's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Response, status
from fastapi.concurrency import run_in_threadpool

from api.deps import CurrentUser, CurrentUserId, SessionDep
from api.paging import Paging
from weft import workflows
from weft.integrations import connector
from weft.schemas.integrations import ConnectorIn, ConnectorStatus, Receipt, RecommendationBatch, VehiclePage
from weft.schemas.workflows import WorkflowOut, WorkflowView, step_request
from weft.specs.names import WorkflowName

router = APIRouter(prefix="/integrations", tags=["integrations"])
WORKFLOW = WorkflowName.RELAYCORE_RECOMMENDATIONS


@router.put("/relaycore", response_model=ConnectorStatus)
async def configure_relaycore(body: ConnectorIn, user_id: CurrentUserId) -> ConnectorStatus:
    """Check the key against RelayCore (one vehicle listed) and save the connector; a refused key is a 422
    (INVALID_CREDENTIALS), an unreachable RelayCore a 502, and nothing is saved. The key is never echoed."""
    base_url = str(body.base_url) if body.base_url else None
    return await run_in_threadpool(connector.configure, user_id, base_url, body.api_key)


@router.get("/relaycore", response_model=ConnectorStatus)
async def relaycore_status(user_id: CurrentUserId) -> ConnectorStatus:
    """Whether RelayCore is configured, and its base URL."""
    return await run_in_threadpool(connector.status, user_id)


@router.delete("/relaycore", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def remove_relaycore(user_id: CurrentUserId) -> None:
    """Delete the connector and its Secret block (404 when none is configured)."""
    await run_in_threadpool(connector.remove, user_id)


@router.get("/relaycore/vehicles", response_model=VehiclePage)
async def relaycore_vehicles(user_id: CurrentUserId, page: Paging) -> VehiclePage:
    """RelayCore's vehicles, read live (`limit`/`offset`; `meta` as RelayCore reports it)."""
    return await run_in_threadpool(connector.vehicles, user_id, page.limit, page.offset)


@router.post("/relaycore/recommendations", status_code=status.HTTP_201_CREATED, response_model=Receipt)
async def send_relaycore_recommendations(body: RecommendationBatch, user_id: CurrentUserId) -> Receipt:
    """Send a VIN's maintenance recommendations to RelayCore; its receipt."""
    return await run_in_threadpool(connector.send, user_id, body)


def recommendations_step(user: CurrentUser, session: SessionDep,
                         body: Any = Body(..., title="RelayCore recommendations step")) -> WorkflowView:
    """RelayCore service recommendations (step API, document 004): the endpoint and the vehicles; with
    `trigger_workflow: true` the run starts (409 INTEGRATION_NOT_CONFIGURED without a connector)."""
    return workflows.post_step(session, user.id, WORKFLOW, body)


recommendations_step.__annotations__["body"] = step_request(WORKFLOW)
router.add_api_route("/relaycore/recommendations-workflow", recommendations_step, methods=["POST"],
                     response_model=WorkflowOut, name=f"{WORKFLOW}_step",
                     summary="RelayCore service recommendations (step API)")
