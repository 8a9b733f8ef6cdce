"""Measured metrics (document 000's overview, document 001's deployment metrics) and optimization
recommendations (document 000)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime

# --- GET /monitoring/metrics --------------------------------------------------------------------------

class Latency(BaseModel):
    """Percentiles by linear interpolation between order statistics (numpy's default)."""

    avg_latency_ms: float | None
    p50_latency_ms: float | None
    p90_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None


class CostOverview(BaseModel):
    total: float
    training: float
    inference: float
    storage: float
    period: str = Field(description="month_to_date")
    currency: str = "USD"


class PerformanceOverview(BaseModel):
    avg_latency_ms: float | None
    p90_latency_ms: float | None
    p99_latency_ms: float | None
    throughput: float
    throughput_unit: str = Field(description="requests/minute")
    success_rate: float | None = Field(description="share of requests below HTTP 400; null without requests")


class UsageOverview(BaseModel):
    total_requests: int
    total_tokens_input: int
    total_tokens_output: int
    active_models: int
    active_deployments: int


class MetricsOverview(BaseModel):
    """Cost, performance and usage of the caller's deployments, month to date."""

    cost: CostOverview
    performance: PerformanceOverview
    usage: UsageOverview


# --- GET /metrics/{deployment_id} --------------------------------------------------------------------

class MetricsPeriod(BaseModel):
    start: UtcDatetime
    end: UtcDatetime
    hours: float
    resolution: str = Field(description="1m | 5m | 1h | 1d")


class DeploymentMetricValues(Latency):
    request_count: int
    error_count: int
    cold_starts: int = Field(description="replicas started in the period for a request waiting on the endpoint "
                                         "scaled to zero")
    unique_users: int
    tokens_input: int
    tokens_output: int


class TimeSeries(BaseModel):
    timestamps: list[UtcDatetime] = Field(description="the start of each bucket")
    request_counts: list[int]
    avg_latencies: list[float | None] = Field(description="ms; null for a bucket without requests")


class CostBreakdown(BaseModel):
    compute: float


class CostRates(BaseModel):
    pool_hour_cost: dict[str, float] = Field(description="USD per replica-hour by work pool")


class CostEstimate(BaseModel):
    total_usd: float
    breakdown: CostBreakdown
    rates: CostRates


class DeploymentMetrics(BaseModel):
    """Counts, latency percentiles, a time series and the measured cost of one deployment."""

    deployment_id: str
    period: MetricsPeriod
    metrics: DeploymentMetricValues
    time_series: TimeSeries
    cost_estimate: CostEstimate


# --- GET /monitoring/optimization-recommendations --------------------------------------------------------

class EstimatedSavings(BaseModel):
    monthly: float = Field(description="USD per month; negative when the change costs more")
    percentage: int


class Recommendation(BaseModel):
    id: str
    model_id: str | None
    model_name: str | None
    endpoint_id: str
    type: str = Field(description="scale_down | scale_up | caching | quantization")
    description: str
    estimated_savings: EstimatedSavings
    estimated_impact: dict[str, str] = Field(description="e.g. {\"latency\": \"+5%\"}")
    complexity: str = Field(description="low | medium | high")
    status: str = Field(description="recommended")
    evidence: dict[str, Any] = Field(description="the measurements the recommendation follows from")
