"""Metrics come from the gateway's records: N requests with known latencies give the expected
counts, percentiles, time series and cost; recommendations follow the measured traffic."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from weft.clock import utcnow
from weft.db import session_scope
from weft.tables import Endpoint, InferenceRecord, Model, Replica


@pytest.fixture
def deployed(client, auth_headers):
    """A user with one active endpoint (2 replicas running for the last 2 hours, 2 more that ran 1 s each in
    the last hour, one of them a cold start) and 100 requests of latencies 1..100 ms over the last hour
    (every 10th one a 500)."""
    headers = auth_headers()
    user_id = client.get("/api/v1/auth/me", headers=headers).json()["id"]
    now = utcnow()
    with session_scope() as s:
        model = Model(user_id=user_id, name="served", provider_type="disk",
                      details={"parameter_count": 1_000_000_000, "num_layers": 16, "hidden_size": 2048,
                               "num_attention_heads": 16, "context_length": 2048})
        endpoint = Endpoint(user_id=user_id, model_id=model.id, name=f"m-{user_id[:8]}", status="active", pool="gpu")
        s.add_all([model, endpoint,
                   Replica(endpoint_id=endpoint.id, state="healthy", url="http://x", created_at=now - timedelta(hours=2),
                           last_seen=now),
                   Replica(endpoint_id=endpoint.id, state="healthy", url="http://y", created_at=now - timedelta(hours=2),
                           last_seen=now),
                   # in the last hour: one replica started for a request waiting on zero replicas (a cold
                   # start) and one started by the autoscaler under load (not a cold start); both ran 1 s
                   Replica(endpoint_id=endpoint.id, state="stopped", url="http://z", cold_start=True,
                           created_at=now - timedelta(minutes=30), updated_at=now - timedelta(minutes=30, seconds=-1)),
                   Replica(endpoint_id=endpoint.id, state="stopped", url="http://w",
                           created_at=now - timedelta(minutes=20), updated_at=now - timedelta(minutes=20, seconds=-1))])
        for i in range(100):
            s.add(InferenceRecord(endpoint_id=endpoint.id, user_id=user_id, route="/v1/completions",
                                  latency_ms=float(i + 1), tokens_in=10, tokens_out=5,
                                  status_code=500 if i % 10 == 9 else 200, prompt="what is the oil level?",
                                  created_at=now - timedelta(minutes=59) + timedelta(seconds=30 * i)))
        endpoint_id, model_id = endpoint.id, model.id
    return headers, endpoint_id, model_id


def test_deployment_metrics_are_measured(client, deployed):
    headers, endpoint_id, _ = deployed
    ok = [float(i + 1) for i in range(100) if i % 10 != 9]
    r = client.get(f"/api/v1/metrics/{endpoint_id}", headers=headers, params={"hours": 2, "resolution": "1h"})
    assert r.status_code == 200, r.text
    m = r.json()["metrics"]
    assert (m["request_count"], m["error_count"], m["unique_users"], m["tokens_output"]) == (100, 10, 1, 500)
    assert m["cold_starts"] == 1  # the replica started for a waiting request, not every replica start
    assert m["avg_latency_ms"] == pytest.approx(np.mean(ok))
    assert m["p95_latency_ms"] == pytest.approx(np.percentile(ok, 95), abs=1e-3)
    assert m["p99_latency_ms"] == pytest.approx(np.percentile(ok, 99), abs=1e-3)
    series = r.json()["time_series"]
    assert len(series["timestamps"]) == 2 and sum(series["request_counts"]) == 90
    cost = r.json()["cost_estimate"]
    assert cost["total_usd"] == pytest.approx(2 * 2 * 2.5, rel=0.01)  # 2 replicas x 2 h x $2.5 (gpu)
    assert client.get(f"/api/v1/metrics/{endpoint_id}", headers=headers,
                      params={"resolution": "7m"}).status_code == 422
    assert client.get(f"/api/v1/metrics/{endpoint_id}", headers=headers, params={"hours": 500}).status_code == 422


def test_monitoring_overview_counts_and_success_rate(client, deployed):
    headers, _, _ = deployed
    body = client.get("/api/v1/monitoring/metrics", headers=headers).json()
    assert body["usage"]["total_requests"] == 100 and body["usage"]["total_tokens_input"] == 1000
    assert body["usage"]["active_deployments"] == 1 and body["usage"]["active_models"] == 1
    assert body["performance"]["success_rate"] == 0.9
    assert body["performance"]["p99_latency_ms"] == pytest.approx(
        np.percentile([float(i + 1) for i in range(100) if i % 10 != 9], 99), abs=1e-3)
    assert body["cost"]["inference"] > 0 and body["cost"]["period"] == "month_to_date"


def test_recommendations_follow_the_traffic(client, deployed):
    headers, _, model_id = deployed
    recs = {r["type"]: r for r in client.get("/api/v1/monitoring/optimization-recommendations",
                                             headers=headers).json()["data"]}
    assert {"scale_down", "caching", "quantization"} <= set(recs)  # 2 idle replicas, one prompt 100 times
    assert recs["caching"]["estimated_savings"]["percentage"] == 99
    assert recs["quantization"]["model_id"] == model_id and recs["quantization"]["status"] == "recommended"
    assert "scale_up" not in recs


def test_recommendations_are_published_once_a_day_as_events(client, deployed):
    from sqlmodel import select

    from weft.monitoring.recommendations import publish
    from weft.tables import Event

    _, endpoint_id, _ = deployed
    with session_scope() as s:
        first = publish(s, s.get(Endpoint, endpoint_id))
    with session_scope() as s:
        publish(s, s.get(Endpoint, endpoint_id))  # the same day again: no new events
    with session_scope() as s:
        events = s.exec(select(Event).where(Event.type == "optimization.recommended")).all()
        mine = [e for e in events if e.data["endpoint_id"] == endpoint_id]
    assert sorted(e.data["type"] for e in mine) == sorted(r["type"] for r in first) and len(mine) == len(first)
