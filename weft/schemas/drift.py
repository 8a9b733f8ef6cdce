"""Drift alerts of the drift_monitor flow (document 000's shape) and their retrain decisions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from weft.schemas.common import UtcDatetime


class DriftAlertOut(BaseModel):
    id: str
    endpoint_id: str | None
    model_id: str | None
    model_name: str | None
    severity: str = Field(description="low | medium | high")
    type: str = Field(description="data_drift | performance_drift")
    description: str
    metrics: dict[str, Any] = Field(description="e.g. drift_score, p_value, feature")
    status: str = Field(description="open | acknowledged | resolved")
    recommended_action: str | None
    report_url: str | None = Field(description="the evidently HTML report; null when the alert has none")
    decisions: list[dict[str, Any]] = Field(
        description="every retrain-policy decision, oldest first: {at, step, decision, reason, ...}")
    detected_at: UtcDatetime
    updated_at: UtcDatetime


class AlertUpdate(BaseModel):
    """`PATCH /monitoring/drift-alerts/{id}`: acknowledge or resolve, and/or approve the retrain."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["acknowledged", "resolved"] | None = None
    approve_retrain: bool = False
