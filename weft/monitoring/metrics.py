"""Usage, performance and cost from what weft measured: the gateway's request records, replica
lifetimes, training runtimes and stored bytes, priced with the configured rates
(WEFT_POOL_HOUR_COST, WEFT_STORAGE_GB_MONTH_COST). Nothing here is estimated from thin air."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from weft import pools
from weft.clock import utcnow
from weft.schemas.monitoring import Latency
from weft.settings import get_settings
from weft.statuses import EndpointStatus, ReplicaState
from weft.tables import Adapter, Dataset, Endpoint, InferenceRecord, Model, Replica

RESOLUTIONS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
GB = 1e9


def latency(values: list[float]) -> Latency:
    if not values:
        return Latency(avg_latency_ms=None, p50_latency_ms=None, p90_latency_ms=None, p95_latency_ms=None,
                       p99_latency_ms=None)
    a = np.asarray(values, dtype=float)
    p50, p90, p95, p99 = (round(float(v), 3) for v in np.percentile(a, [50, 90, 95, 99]))
    return Latency(avg_latency_ms=round(float(a.mean()), 3), p50_latency_ms=p50, p90_latency_ms=p90,
                   p95_latency_ms=p95, p99_latency_ms=p99)


def records(session: Session, endpoint_ids: list[str], start: datetime, end: datetime) -> list[InferenceRecord]:
    if not endpoint_ids:
        return []
    return list(session.exec(select(InferenceRecord).where(col(InferenceRecord.endpoint_id).in_(endpoint_ids),
                                                           InferenceRecord.created_at >= start,
                                                           InferenceRecord.created_at < end)))


def replica_hours(session: Session, endpoints: list[Endpoint], start: datetime, end: datetime) -> dict[str, float]:
    """Hours each pool ran replicas of these endpoints within [start, end)."""
    pool_of = {e.id: e.pool or pools.CPU for e in endpoints}
    hours: dict[str, float] = {}
    for r in session.exec(select(Replica).where(col(Replica.endpoint_id).in_(list(pool_of)))) if pool_of else []:
        ended = r.state in (ReplicaState.STOPPED, ReplicaState.UNHEALTHY)
        stopped = r.updated_at if ended else (r.last_seen or r.updated_at)
        if r.state == ReplicaState.HEALTHY:
            stopped = max(stopped, min(end, utcnow()))
        overlap = (min(stopped, end) - max(r.created_at, start)).total_seconds()
        if overlap > 0:
            hours[pool_of[r.endpoint_id]] = hours.get(pool_of[r.endpoint_id], 0.0) + overlap / 3600
    return hours


def priced(hours: dict[str, float]) -> float:
    rates = get_settings().pool_hour_cost
    return sum(h * rates.get(pool, rates.get(pools.CPU, 0.0)) for pool, h in hours.items())


def training_hours(session: Session, user_id: str, start: datetime, end: datetime) -> dict[str, float]:
    """Training runtimes of the user's adapters registered in the period (on the pool their run used
    when known; `cpu` otherwise)."""
    hours: dict[str, float] = {}
    for a in session.exec(select(Adapter).where(Adapter.user_id == user_id, Adapter.created_at >= start,
                                                Adapter.created_at < end)):
        pool = (a.metrics or {}).get("pool") or pools.CPU
        hours[pool] = hours.get(pool, 0.0) + float((a.metrics or {}).get("train_runtime", 0.0)) / 3600
    return hours


def stored_gb(session: Session, user_id: str) -> float:
    total = sum(d.size_bytes or 0 for d in session.exec(select(Dataset).where(Dataset.user_id == user_id)))
    total += sum(a.size_bytes or 0 for a in session.exec(select(Adapter).where(Adapter.user_id == user_id)))
    total += sum(int((m.details or {}).get("size_bytes") or 0)
                 for m in session.exec(select(Model).where(Model.user_id == user_id)))
    return total / GB


def storage_cost(gb: float, start: datetime, end: datetime) -> float:
    return gb * get_settings().storage_gb_month_cost * (end - start).total_seconds() / (30 * 86400)


def overview(session: Session, user_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Document 000's `GET /monitoring/metrics`, month to date."""
    end = now or utcnow()
    start = end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    endpoints = list(session.exec(select(Endpoint).where(Endpoint.user_id == user_id)))
    rows = records(session, [e.id for e in endpoints], start, end)
    lat = latency([r.latency_ms for r in rows if r.status_code < 400])
    training = priced(training_hours(session, user_id, start, end))
    inference = priced(replica_hours(session, endpoints, start, end))
    storage = storage_cost(stored_gb(session, user_id), start, end)
    minutes = max((end - start).total_seconds() / 60, 1e-9)
    active = [e for e in endpoints if e.status == EndpointStatus.ACTIVE]
    return {
        "cost": {"total": round(training + inference + storage, 4), "training": round(training, 4),
                 "inference": round(inference, 4), "storage": round(storage, 4), "period": "month_to_date",
                 "currency": "USD"},
        "performance": {"avg_latency_ms": lat.avg_latency_ms, "p90_latency_ms": lat.p90_latency_ms,
                        "p99_latency_ms": lat.p99_latency_ms, "throughput": round(len(rows) / minutes, 4),
                        "throughput_unit": "requests/minute",
                        "success_rate": round(sum(r.status_code < 400 for r in rows) / len(rows), 4) if rows else None},
        "usage": {"total_requests": len(rows), "total_tokens_input": sum(r.tokens_in for r in rows),
                  "total_tokens_output": sum(r.tokens_out for r in rows),
                  "active_models": len({e.model_id for e in active}), "active_deployments": len(active)},
    }


def deployment(session: Session, endpoint: Endpoint, hours: float, resolution: str,
               now: datetime | None = None) -> dict[str, Any]:
    """Document 001's `GET /metrics/{deployment_id}`: counts, latency percentiles, cold starts (replicas
    started because a request waited on an endpoint scaled to zero, not every replica start), unique
    users, a time series at `resolution` and the measured cost. Times are datetimes (the API returns
    them as ISO 8601 UTC)."""
    end = now or utcnow()
    start = end - timedelta(hours=hours)
    rows = records(session, [endpoint.id], start, end)
    ok = [r for r in rows if r.status_code < 400]
    lat = latency([r.latency_ms for r in ok])
    step = RESOLUTIONS[resolution]
    buckets = int(np.ceil((end - start) / step))
    counts, sums = [0] * buckets, [0.0] * buckets
    for r in ok:
        i = min(int((r.created_at - start) / step), buckets - 1)
        counts[i] += 1
        sums[i] += r.latency_ms
    cold_starts = session.exec(select(Replica).where(Replica.endpoint_id == endpoint.id, col(Replica.cold_start),
                                                     Replica.created_at >= start, Replica.created_at < end)).all()
    compute = priced(replica_hours(session, [endpoint], start, end))
    return {
        "deployment_id": endpoint.id,
        "period": {"start": start, "end": end, "hours": hours,
                   "resolution": resolution},
        "metrics": {"request_count": len(rows), "error_count": len(rows) - len(ok), **lat.model_dump(),
                    "cold_starts": len(cold_starts), "unique_users": len({r.user_id for r in rows if r.user_id}),
                    "tokens_input": sum(r.tokens_in for r in rows), "tokens_output": sum(r.tokens_out for r in rows)},
        "time_series": {"timestamps": [start + i * step for i in range(buckets)],
                        "request_counts": counts,
                        "avg_latencies": [round(s / c, 3) if c else None for s, c in zip(sums, counts)]},
        "cost_estimate": {"total_usd": round(compute, 4), "breakdown": {"compute": round(compute, 4)},
                          "rates": {"pool_hour_cost": get_settings().pool_hour_cost}},
    }
