"""Drift alerts (document 000's shape) of the drift_monitor flow: list, acknowledge/resolve, approve a
retrain, and read the evidently report."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.paging import Listing, Paging, paginate
from weft.clock import utcnow
from weft.monitoring import retrain
from weft.schemas.common import Page
from weft.schemas.drift import AlertUpdate, DriftAlertOut
from weft.statuses import AlertStatus
from weft.storage import get_storage
from weft.tables import DriftAlert

router = APIRouter(tags=["monitoring"])

STATUSES = tuple(AlertStatus)
SEVERITIES = ("low", "medium", "high")


def alert_view(alert: DriftAlert) -> DriftAlertOut:
    return DriftAlertOut(
        id=alert.id, endpoint_id=alert.endpoint_id, model_id=alert.model_id, model_name=alert.model_name,
        severity=alert.severity, type=alert.type, description=alert.description, metrics=alert.metrics,
        status=alert.status, recommended_action=alert.recommended_action,
        report_url=f"/api/v1/monitoring/drift-alerts/{alert.id}/report" if alert.report_key else None,
        decisions=alert.decisions, detected_at=alert.detected_at, updated_at=alert.updated_at)


def _check(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: {name} must be one of {', '.join(allowed)}",
                       {"parameter": name, "allowed": list(allowed)})


@router.get("/monitoring/drift-alerts", response_model=Page[DriftAlertOut])
def list_drift_alerts(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing,
                      status: str | None = Query(None, description="open | acknowledged | resolved"),
                      severity: str | None = Query(None, description="low | medium | high"),
                      model_id: str | None = Query(None), endpoint_id: str | None = Query(None),
                      type: str | None = Query(None, description="data_drift | performance_drift")) -> dict:
    """The caller's drift alerts, newest first: `{data: [...], meta: {total, limit, offset}}`."""
    _check("status", status, STATUSES)
    _check("severity", severity, SEVERITIES)
    _check("type", type, ("data_drift", "performance_drift"))
    stmt = select(DriftAlert).where(DriftAlert.user_id == user.id)
    for column, value in ((DriftAlert.status, status), (DriftAlert.severity, severity),
                          (DriftAlert.model_id, model_id), (DriftAlert.endpoint_id, endpoint_id),
                          (DriftAlert.type, type)):
        if value is not None:
            stmt = stmt.where(column == value)
    return paginate(session, stmt.order_by(col(DriftAlert.detected_at).desc()), page, alert_view, listing,
                    DriftAlertOut)


@router.get("/monitoring/drift-alerts/{alert_id}", response_model=DriftAlertOut)
def get_drift_alert(alert_id: str, user: CurrentUser, session: SessionDep) -> DriftAlertOut:
    return alert_view(get_owned(session, DriftAlert, alert_id, user.id, "drift alert"))


@router.patch("/monitoring/drift-alerts/{alert_id}", response_model=DriftAlertOut)
async def update_drift_alert(alert_id: str, body: AlertUpdate, user: CurrentUser,
                             session: SessionDep) -> DriftAlertOut:
    """Acknowledge or resolve an alert; `approve_retrain: true` records the approval and starts the retrain
    when the policy (cooldown, runs per week) allows: the decision is on the alert either way."""
    alert = get_owned(session, DriftAlert, alert_id, user.id, "drift alert")
    if body.status is None and not body.approve_retrain:
        raise ApiError(422, "VALIDATION_ERROR", "send status (acknowledged | resolved) and/or approve_retrain: true",
                       {"errors": [{"field": "status", "message": "nothing to change"}]})
    if body.approve_retrain and (alert.type != "data_drift" or alert.severity != "high"):
        raise ApiError(409, "CONFLICT", "only a high data_drift alert can start a retrain",
                       {"severity": alert.severity, "type": alert.type})
    if body.approve_retrain and alert.status == AlertStatus.RESOLVED:
        raise ApiError(409, "CONFLICT", "the alert is resolved", {"status": alert.status})
    if body.status and body.status != alert.status:
        if alert.status == AlertStatus.RESOLVED:
            raise ApiError(409, "CONFLICT", "a resolved alert stays resolved", {"status": alert.status})
        retrain.record(session, alert, "status", body.status, f"set by user {user.id}", user_id=user.id)
        alert.status, alert.updated_at = body.status, utcnow()
        session.add(alert)
        session.commit()
    if body.approve_retrain:
        # the retrain start talks to the Prefect server: off the event loop
        await run_in_threadpool(retrain.apply_policy, session, alert, approved=True, approved_by=user.id)
    session.refresh(alert)
    return alert_view(alert)


@router.get("/monitoring/drift-alerts/{alert_id}/report", response_class=HTMLResponse,
            responses={200: {"description": "the evidently HTML report",
                             "content": {"text/html": {"schema": {"type": "string"}}}}})
def drift_report(alert_id: str, user: CurrentUser, session: SessionDep) -> HTMLResponse:
    """The evidently HTML report of a data-drift alert."""
    alert = get_owned(session, DriftAlert, alert_id, user.id, "drift alert")
    if not alert.report_key or not get_storage().exists(alert.report_key):
        raise ApiError(404, "NOT_FOUND", f"drift alert {alert_id} has no report", {"resource": "report"})
    return HTMLResponse(get_storage().read_bytes(alert.report_key))
