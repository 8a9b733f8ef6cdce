"""Optimization recommendations (document 000) derived from the last day of measured traffic:
idle replicas → scale down, saturated replicas with a high p99 → add a worker, repeated identical
prompts → response caching, a model served in full precision that fits int8/int4 → quantization."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlmodel import Session, select

from weft import hardware
from weft.clock import utcnow
from weft.ids import recommendation_id_of
from weft.monitoring.metrics import latency, priced, records, replica_hours
from weft.statuses import EndpointStatus, ReplicaState
from weft.tables import Endpoint, Model, Replica

WINDOW = timedelta(hours=24)
IDLE_BUSY_SHARE = 0.05  # a replica busy less than this share of the window is idle
SATURATED_BUSY_SHARE = 0.8
REPEAT_SHARE = 0.2  # identical prompts at least this share of requests → caching pays


def recommendation(endpoint: Endpoint, model: Model | None, kind: str, description: str, monthly: float,
                   percentage: float, impact: dict[str, str], complexity: str, evidence: dict[str, Any]) -> dict:
    return {"id": recommendation_id_of(endpoint.id, kind), "model_id": endpoint.model_id,
            "model_name": model.name if model else None, "endpoint_id": endpoint.id, "type": kind,
            "description": description, "estimated_savings": {"monthly": round(monthly, 2),
                                                              "percentage": round(percentage)},
            "estimated_impact": impact, "complexity": complexity, "status": "recommended", "evidence": evidence}


def for_endpoint(session: Session, endpoint: Endpoint) -> list[dict[str, Any]]:
    end = utcnow()
    start = end - WINDOW
    rows = records(session, [endpoint.id], start, end)
    model = session.get(Model, endpoint.model_id)
    healthy = [r for r in session.exec(select(Replica).where(Replica.endpoint_id == endpoint.id,
                                                             Replica.state == ReplicaState.HEALTHY))]
    monthly = priced(replica_hours(session, [endpoint], start, end)) * 30
    out: list[dict[str, Any]] = []
    busy = sum(r.latency_ms for r in rows) / 1000 / WINDOW.total_seconds()  # replica-seconds busy per second
    if len(healthy) > 1 and busy / len(healthy) < IDLE_BUSY_SHARE:
        keep = max(1, int(busy / SATURATED_BUSY_SHARE) + 1)
        share = (len(healthy) - keep) / len(healthy)
        out.append(recommendation(endpoint, model, "scale_down",
                                  f"{len(healthy)} replicas were busy {busy:.1%} of one replica's time over 24 h: "
                                  f"{keep} would serve this traffic.", monthly * share, share * 100,
                                  {"latency": "+0% at this load"}, "low",
                                  {"replicas": len(healthy), "busy_replicas": round(busy, 4), "requests": len(rows)}))
    lat = latency([r.latency_ms for r in rows if r.status_code < 400])
    if healthy and busy / len(healthy) > SATURATED_BUSY_SHARE and lat.p99_latency_ms and lat.p50_latency_ms \
            and lat.p99_latency_ms > 3 * lat.p50_latency_ms:
        out.append(recommendation(endpoint, model, "scale_up",
                                  f"replicas were busy {busy / len(healthy):.0%} of the time and p99 latency is "
                                  f"{lat.p99_latency_ms / lat.p50_latency_ms:.1f}x p50: add a worker "
                                  "(POST /api/v1/endpoints/add-worker).", -monthly / len(healthy), -100 / len(healthy),
                                  {"p99_latency": "lower (less queueing)"}, "low",
                                  {"busy_share": round(busy / len(healthy), 4), **lat.model_dump()}))
    prompts = Counter(r.prompt for r in rows if r.prompt)
    repeated = sum(c - 1 for c in prompts.values() if c > 1)
    if rows and repeated / len(rows) >= REPEAT_SHARE:
        share = repeated / len(rows)
        out.append(recommendation(endpoint, model, "caching",
                                  f"{share:.0%} of the last day's requests repeated an earlier prompt exactly: a "
                                  "response cache would answer them without the model.", monthly * share, share * 100,
                                  {"latency": f"-{share:.0%} of requests served from cache"}, "low",
                                  {"requests": len(rows), "repeats": repeated,
                                   "top_prompt_count": prompts.most_common(1)[0][1]}))
    details = (model.details or {}) if model else {}
    params = details.get("parameter_count")
    quantized = (model.parameters or {}).get("quantization") if model else None
    if params and not quantized:
        est = hardware.estimate(params, num_layers=details.get("num_layers"), hidden_size=details.get("hidden_size"),
                                num_attention_heads=details.get("num_attention_heads"),
                                num_key_value_heads=details.get("num_key_value_heads"),
                                context_length=details.get("context_length"))
        if est.serve_fp16_gb > 0:
            share = 1 - est.serve_int4_gb / est.serve_fp16_gb
            out.append(recommendation(endpoint, model, "quantization",
                                      f"served unquantized: int4 needs {est.serve_int4_gb:.2f} GB instead of "
                                      f"{est.serve_fp16_gb:.2f} GB (int8 {est.serve_int8_gb:.2f} GB), so a smaller or "
                                      "shared GPU fits it; evaluate the quantized model before switching.",
                                      monthly * share, share * 100, {"accuracy": "measure with evaluate_model"},
                                      "medium", {"serve_fp16_gb": est.serve_fp16_gb, "serve_int8_gb": est.serve_int8_gb,
                                                 "serve_int4_gb": est.serve_int4_gb}))
    return out


def for_user(session: Session, user_id: str) -> list[dict[str, Any]]:
    endpoints = session.exec(select(Endpoint).where(Endpoint.user_id == user_id,
                                                    Endpoint.status == EndpointStatus.ACTIVE))
    return [rec for endpoint in endpoints for rec in for_endpoint(session, endpoint)]


def publish(session: Session, endpoint: Endpoint) -> list[dict[str, Any]]:
    """The endpoint's recommendations as `optimization.recommended` webhook events, each at most once a day."""
    from weft.webhooks.outbox import emit

    found = for_endpoint(session, endpoint)
    day = utcnow().strftime("%Y-%m-%d")
    for rec in found:
        emit(session, "optimization.recommended", rec, key=f"{rec['id']}:{day}", user_id=endpoint.user_id)
    return found
