"""Measured metrics (documents 000 and 001) and optimization recommendations."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Paging, page_response
from weft.monitoring import metrics, recommendations
from weft.tables import Endpoint

router = APIRouter(tags=["monitoring"])


@router.get("/monitoring/metrics")
def monitoring_metrics(user: CurrentUser, session: SessionDep) -> dict:
    """Cost, performance and usage of the caller's deployments, month to date."""
    return metrics.overview(session, user.id)


@router.get("/metrics/{deployment_id}")
def deployment_metrics(deployment_id: str, user: CurrentUser, session: SessionDep,
                       hours: float = Query(24, gt=0, le=168), resolution: str = Query("1h")) -> dict:
    if resolution not in metrics.RESOLUTIONS:
        raise ApiError(422, "VALIDATION_ERROR", f"resolution must be one of {list(metrics.RESOLUTIONS)}",
                       {"parameter": "resolution"})
    endpoint = get_owned(session, Endpoint, deployment_id, user.id, "deployment")
    return metrics.deployment(session, endpoint, hours, resolution)


@router.get("/monitoring/optimization-recommendations")
def optimization_recommendations(user: CurrentUser, session: SessionDep, page: Paging) -> dict:
    found = recommendations.for_user(session, user.id)
    return page_response(found[page.offset:page.offset + page.limit], len(found), page)
