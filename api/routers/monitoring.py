"""Measured metrics (documents 000 and 001) and optimization recommendations."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUser, SessionDep, gateway, get_owned
from api.errors import ApiError
from api.paging import Listing, Paging, arranged, listed, page_response
from weft.monitoring import metrics, recommendations
from weft.schemas.common import Page
from weft.schemas.monitoring import DeploymentMetrics, MetricsOverview, Recommendation
from weft.tables import Endpoint

router = APIRouter(tags=["monitoring"])


@router.get("/monitoring/metrics", response_model=MetricsOverview)
def monitoring_metrics(user: CurrentUser, session: SessionDep) -> dict:
    """Cost, performance and usage of the caller's deployments, month to date."""
    return metrics.overview(session, user.id)


@router.get("/metrics/{deployment_id}", response_model=DeploymentMetrics)
async def deployment_metrics(deployment_id: str, request: Request, user: CurrentUser, session: SessionDep,
                             hours: float = Query(24, gt=0, le=168, description="the period: the last `hours` hours"),
                             resolution: str = Query("1h", description="time-series bucket: 1m | 5m | 1h | 1d")) -> dict:
    """Counts, latency percentiles, cold starts, a time series at `resolution` and the measured cost. The
    requests this API process served are counted up to this one (its queued records are written first)."""
    if resolution not in metrics.RESOLUTIONS:
        raise ApiError(422, "VALIDATION_ERROR", f"resolution must be one of {list(metrics.RESOLUTIONS)}",
                       {"parameter": "resolution"})
    await gateway(request).recorder.drain()

    def measured() -> dict:
        return metrics.deployment(session, get_owned(session, Endpoint, deployment_id, user.id, "deployment"), hours,
                                  resolution)

    return await run_in_threadpool(measured)


@router.get("/monitoring/optimization-recommendations", response_model=Page[Recommendation])
def optimization_recommendations(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing) -> dict:
    """Recommendations derived from the last day of measured traffic of the caller's active endpoints.
    They are computed on request, not stored, so the page is cut from the computed list."""
    found = arranged(recommendations.for_user(session, user.id), listing, Recommendation)
    return listed(page_response(found[page.offset:page.offset + page.limit], len(found), page), listing)
