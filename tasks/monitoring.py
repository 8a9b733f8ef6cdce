"""Tasks of the drift_monitor flow: endpoints to watch, reference and current prompts, the drift checks,
alerts with their evidently report, and the retrain policy.

A scheduled monitor is not a resumable workflow: these are plain tasks without weft's step cache.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel
from sqlmodel import col, select

from weft.clock import utcnow
from weft.db import session_scope
from weft.monitoring import retrain
from weft.monitoring.drift import DriftResult, DriftThresholds, LatencyResult, detect_drift, latency_drift
from weft.statuses import AlertStatus, EndpointStatus
from weft.storage import get_storage
from weft.tables import Adapter, Dataset, DriftAlert, Endpoint, InferenceRecord, Model
from weft.webhooks.outbox import emit

os.environ.setdefault("DO_NOT_TRACK", "1")

MAX_REFERENCE = 5000


class Watched(BaseModel):
    endpoint_id: str
    endpoint_name: str
    user_id: str
    model_id: str
    model_name: str | None
    dataset_id: str | None  # the fine-tune data of an adapter model


class Window(BaseModel):
    start: datetime
    end: datetime
    prompts: list[str]
    latencies_ms: list[float]


class Reference(BaseModel):
    source: str
    prompts: list[str]


@task(cache_policy=NO_CACHE, name="advance_retrains")
def advance_retrains() -> list[dict[str, Any]]:
    """Move every open retrain chain on (fine_tune done → evaluate; evaluation done → deploy a canary if
    promoted; canary window over → promote or roll back). The endpoint controller does the same between
    runs (`retrain.sweep`)."""
    logger = get_run_logger()
    with session_scope() as s:
        moved = retrain.advance_open_chains(s)
    for entry in moved:
        logger.info("alert %s: %s %s (%s)", entry["alert_id"], entry["step"], entry["decision"], entry["reason"])
    return moved


@task(cache_policy=NO_CACHE, name="endpoints_to_watch")
def endpoints_to_watch(endpoint_id: str | None = None) -> list[Watched]:
    """Active endpoints (or the one named), with their model and its fine-tune dataset."""
    with session_scope() as s:
        stmt = select(Endpoint).where(Endpoint.status == EndpointStatus.ACTIVE)
        if endpoint_id:
            stmt = select(Endpoint).where(Endpoint.id == endpoint_id)
        watched = []
        for ep in s.exec(stmt.order_by(Endpoint.created_at)):
            model = s.get(Model, ep.model_id)
            adapter_id = (model.details or {}).get("adapter_id") if model else None
            adapter = s.get(Adapter, adapter_id) if adapter_id else None
            watched.append(Watched(endpoint_id=ep.id, endpoint_name=ep.name, user_id=ep.user_id, model_id=ep.model_id,
                                   model_name=model.name if model else None,
                                   dataset_id=adapter.dataset_id if adapter else None))
    if endpoint_id and not watched:
        raise ValueError(f"endpoint {endpoint_id} does not exist")
    return watched


def recorded(endpoint_id: str, start: datetime, end: datetime) -> Window:
    with session_scope() as s:
        rows = s.exec(select(InferenceRecord.prompt, InferenceRecord.latency_ms, InferenceRecord.status_code)
                      .where(InferenceRecord.endpoint_id == endpoint_id, col(InferenceRecord.created_at) >= start,
                             col(InferenceRecord.created_at) < end)).all()
    return Window(start=start, end=end, prompts=[p for p, _, _ in rows if p],
                  latencies_ms=[lat for _, lat, code in rows if code < 500 and lat is not None])


def dataset_prompts(dataset_id: str, limit: int = MAX_REFERENCE) -> list[str]:
    """The user prompts of a dataset's records (the last user turn of each)."""
    from weft.datasets.formats import iter_batches
    from weft.training.records import example_of, training_record

    with session_scope() as s:
        ds = s.get(Dataset, dataset_id)
        if ds is None:
            return []
        key, file_type = ds.storage_key, ds.file_type
    prompts: list[str] = []
    with get_storage().local(key) as path:
        for batch in iter_batches(path, file_type):
            for rec in batch.to_pylist():
                rec = {k: v for k, v in rec.items() if v is not None}
                try:
                    prompts.append(example_of(rec).input)
                except ValueError:
                    try:
                        row = training_record(rec)
                    except ValueError:
                        continue
                    if "text" in row:
                        prompts.append(row["text"])
                if len(prompts) >= limit:
                    return prompts
    return prompts


@task(cache_policy=NO_CACHE, name="load_reference")
def load_reference(watched: Watched, current_start: datetime, reference_start: datetime | None = None,
                   reference_end: datetime | None = None) -> Reference:
    """A pinned window of recorded prompts when given; else the fine-tune dataset's prompts; else the
    week of recorded prompts before the current window."""
    if reference_start and reference_end:
        w = recorded(watched.endpoint_id, reference_start, reference_end)
        return Reference(source=f"pinned window {reference_start.isoformat()} – {reference_end.isoformat()}",
                         prompts=w.prompts)
    if watched.dataset_id:
        prompts = dataset_prompts(watched.dataset_id)
        if prompts:
            return Reference(source=f"fine-tune dataset {watched.dataset_id}", prompts=prompts)
    w = recorded(watched.endpoint_id, current_start - timedelta(days=7), current_start)
    return Reference(source="recorded prompts of the previous week", prompts=w.prompts)


@task(cache_policy=NO_CACHE, name="load_window")
def load_window(endpoint_id: str, start: datetime, end: datetime) -> Window:
    return recorded(endpoint_id, start, end)


@task(cache_policy=NO_CACHE, name="check_data_drift")
def check_data_drift(reference: Reference, current: Window, thresholds: DriftThresholds) -> DriftResult:
    result = detect_drift(reference.prompts, current.prompts, thresholds=thresholds)
    get_run_logger().info("data drift: %s (%s)", result.severity or "no verdict", result.reason)
    return result


@task(cache_policy=NO_CACHE, name="check_latency_drift")
def check_latency_drift(endpoint_id: str, current: Window, thresholds: DriftThresholds) -> LatencyResult:
    previous = recorded(endpoint_id, current.start - timedelta(days=7), current.start)
    result = latency_drift(previous.latencies_ms, current.latencies_ms, thresholds=thresholds)
    get_run_logger().info("latency drift: %s (%s)", result.severity or "no verdict", result.reason)
    return result


RECOMMENDED = {
    ("data_drift", "high"): "Retrain on the base data plus labelled recent prompts (the retrain policy decides), "
                            "then evaluate before redeploying",
    ("data_drift", "medium"): "Review recent prompts; collect labelled examples of the new traffic",
    ("data_drift", "low"): "Keep watching; no action needed yet",
    ("performance_drift", "high"): "Add replicas (POST /api/v1/endpoints/add-worker) or check the serving hardware",
    ("performance_drift", "medium"): "Check replica load and consider adding a worker",
    ("performance_drift", "low"): "Keep watching latency",
}


def _open_duplicate(s, endpoint_id: str, type_: str, since: datetime) -> DriftAlert | None:
    return s.exec(select(DriftAlert).where(DriftAlert.endpoint_id == endpoint_id, DriftAlert.type == type_,
                                           DriftAlert.status == AlertStatus.OPEN,
                                           col(DriftAlert.detected_at) >= since)).first()


@task(cache_policy=NO_CACHE, name="raise_alert")
def raise_alert(watched: Watched, type_: str, severity: str, description: str, metrics: dict[str, Any],
                window: Window, html: str | None = None) -> str | None:
    """Create the alert (unless an open one of the same type for this endpoint exists within the window),
    store its evidently report under reports/drift/<id>.html and publish a markdown artifact."""
    logger = get_run_logger()
    with session_scope() as s:
        dup = _open_duplicate(s, watched.endpoint_id, type_, window.start)
        if dup is not None:
            logger.info("%s on %s: open alert %s exists already for this window; none created", type_,
                        watched.endpoint_name, dup.id)
            return None
        alert = DriftAlert(user_id=watched.user_id, endpoint_id=watched.endpoint_id, model_id=watched.model_id,
                           model_name=watched.model_name, severity=severity, type=type_, description=description,
                           metrics={**metrics, "window": {"start": window.start.isoformat(),
                                                          "end": window.end.isoformat()}},
                           recommended_action=RECOMMENDED.get((type_, severity)))
        if html:
            alert.report_key = f"reports/drift/{alert.id}.html"
            get_storage().write_bytes(alert.report_key, html.encode())
        s.add(alert)
        emit(s, "drift.detected", {"alert_id": alert.id, "model_id": alert.model_id, "model_name": alert.model_name,
                                   "endpoint_id": alert.endpoint_id, "severity": severity, "type": type_,
                                   "description": description}, key=f"drift:{alert.id}", user_id=alert.user_id)
    link = f"/api/v1/monitoring/drift-alerts/{alert.id}/report" if alert.report_key else "(no report)"
    table = ""
    if type_ == "data_drift":
        table = "\n| descriptor | p-value (KS) |\n| --- | --- |\n" + "\n".join(
            f"| {k} | {v:.3g} |" for k, v in metrics.get("p_values", {}).items())
        if metrics.get("text_drift_score") is not None:
            table += f"\n\nText-content drift score (evidently): {metrics['text_drift_score']:.3f}"
    create_markdown_artifact(
        key=f"drift-{watched.endpoint_id}", description=f"{type_} on {watched.endpoint_name}",
        markdown=(f"# {severity.upper()} {type_.replace('_', ' ')} on `{watched.endpoint_name}`\n\n{description}\n"
                  f"{table}\n\nAlert `{alert.id}`; evidently report: {link}"
                  + (f" (storage `{get_storage().url(alert.report_key)}`)" if alert.report_key else "")))
    logger.warning("%s %s on %s: alert %s", severity, type_, watched.endpoint_name, alert.id)
    return alert.id


@task(cache_policy=NO_CACHE, name="apply_retrain_policy")
def apply_retrain_policy(alert_id: str) -> dict[str, Any]:
    with session_scope() as s:
        alert = s.get(DriftAlert, alert_id)
        entry = retrain.apply_policy(s, alert)
    get_run_logger().info("retrain: %s (%s)", entry["decision"], entry["reason"])
    return entry


def window_bounds(window_hours: float, now: datetime | None = None) -> tuple[datetime, datetime]:
    end = now or utcnow()
    return end - timedelta(hours=window_hours), end


__all__ = ["advance_retrains", "endpoints_to_watch", "load_reference", "load_window", "check_data_drift",
           "check_latency_drift", "raise_alert", "apply_retrain_policy", "window_bounds"]


@task(cache_policy=NO_CACHE)
def publish_recommendations(endpoint_id: str) -> list[str]:
    """The endpoint's current optimization recommendations as `optimization.recommended` events (each
    recommendation at most once a day)."""
    from weft.monitoring.recommendations import publish

    with session_scope() as s:
        found = publish(s, s.get(Endpoint, endpoint_id))
    get_run_logger().info("%d recommendation(s) for %s: %s", len(found), endpoint_id,
                          ", ".join(r["type"] for r in found) or "none")
    return [r["id"] for r in found]
