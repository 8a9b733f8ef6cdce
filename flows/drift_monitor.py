"""Watch active endpoints for data and latency drift; alert, publish the report, apply the retrain policy."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger

from flows import names
from tasks.monitoring import (
    advance_retrains,
    apply_retrain_policy,
    check_data_drift,
    check_latency_drift,
    endpoints_to_watch,
    load_reference,
    load_window,
    publish_recommendations,
    raise_alert,
    window_bounds,
)
from weft.monitoring.drift import DriftThresholds
from weft.specs.names import WorkflowName
from weft.tables import Endpoint

os.environ.setdefault("DO_NOT_TRACK", "1")


@flow(name=WorkflowName.DRIFT_MONITOR.value, log_prints=True,
      flow_run_name=names.run_name(names.param("endpoint_id", Endpoint, default="all endpoints"),
                                   lambda: f"last {names.params().get('window_hours', 24):g} h"))
def drift_monitor(window_hours: float = 24, min_prompts: int = 50, endpoint_id: str | None = None,
                  reference_start: datetime | None = None, reference_end: datetime | None = None,
                  now: datetime | None = None) -> list[dict[str, Any]]:
    """Advance started retrains → for each active endpoint (or `endpoint_id`): reference prompts (a pinned
    window, else the fine-tune dataset, else last week) vs the last `window_hours` of prompts → data-drift
    and latency-drift checks → alerts with their evidently report → retrain policy on high data drift →
    optimization recommendations published as events."""
    logger = get_run_logger()
    advance_retrains()
    thresholds = DriftThresholds(min_current=min_prompts)
    start, end = window_bounds(window_hours, now)
    summary = []
    for watched in endpoints_to_watch(endpoint_id):
        current = load_window(watched.endpoint_id, start, end)
        reference = load_reference(watched, start, reference_start, reference_end)
        data = check_data_drift(reference, current, thresholds)
        row: dict[str, Any] = {"endpoint_id": watched.endpoint_id, "endpoint_name": watched.endpoint_name,
                               "reference": reference.source, "current_prompts": len(current.prompts),
                               "data_drift": data.severity, "data_reason": data.reason, "alerts": []}
        if data.drift:
            alert_id = raise_alert(watched, "data_drift", data.severity,
                                   f"Prompts of the last {window_hours:g} h differ from the reference "
                                   f"({reference.source}): {data.reason}", data.metrics(), current, data.html)
            if alert_id:
                row["alerts"].append(alert_id)
                if data.severity == "high":
                    row["retrain"] = apply_retrain_policy(alert_id)
        latency = check_latency_drift(watched.endpoint_id, current, thresholds)
        row["latency_drift"], row["latency_reason"] = latency.severity, latency.reason
        if latency.drift:
            alert_id = raise_alert(watched, "performance_drift", latency.severity,
                                   f"Latency of the last {window_hours:g} h vs the previous week: {latency.reason}",
                                   latency.metrics(), current)
            if alert_id:
                row["alerts"].append(alert_id)
        row["recommendations"] = publish_recommendations(watched.endpoint_id)
        logger.info("%s: data %s, latency %s", watched.endpoint_name, data.severity or "no verdict",
                    latency.severity or "no verdict")
        summary.append(row)
    return summary


if __name__ == "__main__":
    drift_monitor()
