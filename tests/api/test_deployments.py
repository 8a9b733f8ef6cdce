"""Document 003's deployments: deploying a fine-tuned adapter starts the deploy_model workflow with document
004's steps and answers when it should be ready (from measured deploys); the list carries measured metrics
and filters by status; deleting drains the replicas, then the controller stops them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from tests.helpers.api import assert_error, me
from weft.clock import as_utc, utcnow
from weft.db import session_scope
from weft.serving.controller import Controller, Pass
from weft.settings import get_settings
from weft.tables import (
    Adapter,
    Cluster,
    Endpoint,
    EndpointEvent,
    Event,
    InferenceRecord,
    Model,
    Replica,
    Revision,
    Workflow,
    WorkflowStep,
)


@pytest.fixture
def adapter(client, auth_headers) -> tuple[dict[str, str], str, str]:
    """A user's adapter with its registered fine-tuned model (scan SAFE: deployable): headers, adapter id,
    model id."""
    headers = auth_headers()
    user_id = me(client, headers)["id"]
    with session_scope() as s:
        base = Model(user_id=user_id, name="tiny base", provider_type="disk", storage_uri="file:///nowhere/base",
                     details={"parameter_count": 1000})
        row = Adapter(user_id=user_id, name="support bot", base_model_id=base.id, method="lora",
                      storage_key="adapters/x")
        tuned = Model(user_id=user_id, name="support bot", type="fine-tuned", provider_type="adapter",
                      storage_uri="file:///nowhere/tuned", details={"adapter_id": row.id, "base_model_id": base.id},
                      scan={"status": "SAFE", "total_issues": 0}, scan_verified=True)
        row.model_id = tuned.id
        s.add_all([base, row, tuned])
    return headers, row.id, tuned.id


def cluster(user_id: str | None = None, history_seconds: tuple[float, ...] = ()) -> str:
    """A cluster with a pool of its own where first deploys (of `user_id`'s stopped endpoints) took
    `history_seconds` (endpoint created → first traffic); returns the pool."""
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    with session_scope() as s:
        s.add(Cluster(name=f"Cluster {pool}", pool_name=pool))
        for i, seconds in enumerate(history_seconds):
            created = now - timedelta(hours=1, minutes=i)
            other = Endpoint(user_id=user_id, model_id="m", name=f"hist-{uuid.uuid4().hex[:8]}", status="stopped",
                             created_at=created)
            s.add_all([other, Revision(endpoint_id=other.id, number=1, model_id="m", pool=pool),
                       EndpointEvent(endpoint_id=other.id, action="traffic", reason="v1 100%: deployed",
                                     created_at=created + timedelta(seconds=seconds)),
                       EndpointEvent(endpoint_id=other.id, action="traffic", reason="rolled back",
                                     created_at=created + timedelta(seconds=seconds + 900))])
    return pool


def create(client, headers, adapter_id: str, **body):
    return client.post("/api/v1/deployments", headers=headers,
                       json={"adapter_id": adapter_id, "platform": "weft", **body})


def between(value: str, low: datetime, high: datetime) -> bool:
    return low <= as_utc(datetime.fromisoformat(value.replace("Z", "+00:00"))) <= high


def test_deploying_an_adapter_starts_the_deploy_workflow(client, adapter, fake_trigger):
    headers, adapter_id, model_id = adapter
    pool = cluster(me(client, headers)["id"], history_seconds=(30, 50, 100))
    before = utcnow()
    r = create(client, headers, adapter_id, name=f"bot-{uuid.uuid4().hex[:6]}",
               config={"instance_type": pool, "min_replicas": 1, "max_replicas": 3, "auto_scaling": True})
    after = utcnow()
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["status"], body["endpoint"], body["adapter_id"], body["model_id"], body["platform"],
            body["version"]) == ("deploying", None, adapter_id, model_id, "weft", "v1")
    # the median of the three measured first deploys on that pool (the later traffic change does not count)
    assert between(body["estimated_ready_time"], before + timedelta(seconds=50), after + timedelta(seconds=50))
    assert "median of the 3 newest first deploys" in body["estimate_basis"]

    workflow_type, workflow_id, spec = fake_trigger[-1]
    assert (workflow_type, workflow_id) == ("deploy_model", body["workflow_id"])
    with session_scope() as s:
        cluster_id = s.exec(select(Cluster).where(Cluster.pool_name == pool)).one().id
        steps = {row.step_number: row.data for row in s.exec(select(WorkflowStep).where(
            WorkflowStep.workflow_id == workflow_id))}
    assert sorted(steps) == [1, 3, 5]
    assert steps[1]["model_id"] == model_id and steps[5]["cluster_id"] == cluster_id
    assert (steps[3]["auto_scaling"]["min_instances"], steps[3]["auto_scaling"]["max_instances"]) == (1, 3)
    assert spec["model_id"] == model_id and spec["cluster_id"] == cluster_id
    assert spec["auto_scaling"]["min_instances"] == 1 and spec["auto_scaling"]["max_instances"] == 3
    assert spec["deploy_config"]["max_replicas"] == 3 and spec["endpoint_name"] == body["name"]

    got = client.get(f"/api/v1/deployments/{body['deployment_id']}", headers=headers).json()
    assert (got["adapter_id"], got["platform"], got["status"], got["endpoint"]) == \
        (adapter_id, "weft", "deploying", None)
    assert got["metrics"]["cost_per_hour"] == 0 and got["metrics"]["requests_per_minute"] == 0


def test_without_auto_scaling_the_replicas_are_fixed_and_an_unmeasured_pool_waits_the_start_timeout(
        client, adapter, fake_trigger):
    headers, adapter_id, _ = adapter
    pool = cluster()
    before = utcnow()
    r = create(client, headers, adapter_id, config={"instance_type": pool, "min_replicas": 2, "max_replicas": 4,
                                                     "auto_scaling": False})
    assert r.status_code == 202, r.text
    timeout = get_settings().replica_start_timeout_seconds
    assert between(r.json()["estimated_ready_time"], before + timedelta(seconds=timeout),
                   utcnow() + timedelta(seconds=timeout))
    assert "no deploy on pool" in r.json()["estimate_basis"]
    spec = fake_trigger[-1][2]
    assert (spec["auto_scaling"]["min_instances"], spec["auto_scaling"]["max_instances"]) == (2, 2)
    assert spec["deploy_config"]["replicas"] == 2
    assert r.json()["name"].startswith("support-bot-")  # the adapter's name, made a valid endpoint name


def test_unknown_foreign_and_unregistered_adapters(client, adapter, auth_headers, fake_trigger):
    headers, adapter_id, _ = adapter
    error = assert_error(create(client, headers, "nope"), 404, "NOT_FOUND")
    assert "adapter nope" in error["message"]
    assert_error(create(client, auth_headers(), adapter_id), 404, "NOT_FOUND")  # another user's
    with session_scope() as s:
        row = s.get(Adapter, adapter_id)
        row.model_id = None
        s.add(row)
    error = assert_error(create(client, headers, adapter_id), 409, "CONFLICT")
    assert error["details"]["field"] == "adapter_id" and "no registered model" in error["message"]
    assert fake_trigger == []


def test_bad_platform_and_replica_bounds_name_the_field(client, adapter, fake_trigger):
    headers, adapter_id, _ = adapter
    error = assert_error(create(client, headers, adapter_id, platform="predibase"), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] == "platform" and "weft, local" in error["message"]
    error = assert_error(create(client, headers, adapter_id, config={"min_replicas": 3, "max_replicas": 2}), 422,
                         "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] == "config.max_replicas"
    assert "min_replicas (3)" in error["message"]
    error = assert_error(create(client, headers, adapter_id, config={"instance_type": "gpu-t4"}), 422,
                         "VALIDATION_ERROR")
    assert error["details"]["field"] == "config.instance_type" and "registered cluster" in error["message"]
    assert fake_trigger == []  # the refusals started nothing
    r = create(client, headers, adapter_id, platform="Local", config={"instance_type": cluster()})
    assert r.status_code == 202, r.text


def test_the_list_has_measured_metrics_and_filters_by_status(client, adapter):
    headers, adapter_id, model_id = adapter
    user_id = me(client, headers)["id"]
    now = utcnow()
    with session_scope() as s:
        running = Endpoint(user_id=user_id, model_id=model_id, name=f"run-{uuid.uuid4().hex[:6]}", status="active",
                           pool="gpu")
        stopped = Endpoint(user_id=user_id, model_id=model_id, name=f"old-{uuid.uuid4().hex[:6]}", status="stopped",
                           pool="gpu", created_at=now - timedelta(days=1))
        # one replica running for 2 h (a whole last hour), one that ran the first 30 min of the last hour
        s.add_all([running, stopped,
                   Replica(endpoint_id=running.id, state="healthy", url="http://x", created_at=now - timedelta(hours=2),
                           last_seen=now),
                   Replica(endpoint_id=running.id, state="stopped", created_at=now - timedelta(hours=3),
                           updated_at=now - timedelta(minutes=30))])
        for i in range(30):  # 30 requests in the last hour, latencies 10..300 ms; one more that is older
            s.add(InferenceRecord(endpoint_id=running.id, route="/v1/completions", latency_ms=10.0 * (i + 1),
                                  status_code=200, created_at=now - timedelta(minutes=55) + timedelta(minutes=i)))
        s.add(InferenceRecord(endpoint_id=running.id, route="/v1/completions", latency_ms=5000.0, status_code=200,
                              created_at=now - timedelta(hours=2)))
        running_id, stopped_id = running.id, stopped.id

    r = client.get("/api/v1/deployments", headers=headers)
    assert r.status_code == 200, r.text
    listed = {d["deployment_id"]: d for d in r.json()["deployments"]}
    assert set(listed) == {running_id, stopped_id}
    d = listed[running_id]
    assert (d["adapter_id"], d["platform"], d["status"]) == (adapter_id, "weft", "running")
    assert d["endpoint"].endswith("/v1") and d["created_at"]
    rate = get_settings().pool_hour_cost["gpu"]
    assert d["metrics"]["requests_per_minute"] == 0.5  # 30 in the last hour
    assert d["metrics"]["avg_latency_ms"] == pytest.approx(155.0)  # mean of 10..300
    assert d["metrics"]["cost_per_hour"] == pytest.approx(1.5 * rate, rel=0.01)  # 1 + 0.5 replica-hours
    assert d["metrics"]["requests_last_hour"] == 30 and d["id"] == running_id  # the endpoint's fields stay
    assert listed[stopped_id]["endpoint"] is None and listed[stopped_id]["metrics"]["cost_per_hour"] == 0

    for status, expected in (("running", [running_id]), ("active", [running_id]), ("stopped", [stopped_id]),
                             ("failed", [])):
        r = client.get("/api/v1/deployments", headers=headers, params={"status": status})
        assert [d["deployment_id"] for d in r.json()["deployments"]] == expected, status
    error = assert_error(client.get("/api/v1/deployments", headers=headers, params={"status": "bogus"}), 422,
                         "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] == "status" and "running" in error["message"]


def test_delete_drains_then_the_controller_stops(client, adapter):
    headers, _, model_id = adapter
    user_id = me(client, headers)["id"]
    now = utcnow()
    with session_scope() as s:
        endpoint = Endpoint(user_id=user_id, model_id=model_id, name=f"del-{uuid.uuid4().hex[:6]}", status="active",
                            pool="cpu")
        healthy = Replica(endpoint_id=endpoint.id, state="healthy", url="http://127.0.0.1:9", last_seen=now)
        starting = Replica(endpoint_id=endpoint.id, state="starting")
        gone = Replica(endpoint_id=endpoint.id, state="stopped")
        s.add_all([endpoint, healthy, starting, gone])
        endpoint_id, ids = endpoint.id, (healthy.id, starting.id, gone.id)

    before = utcnow()
    r = client.delete(f"/api/v1/deployments/{endpoint_id}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == endpoint_id and r.json()["status"] == "stopping"
    drain = timedelta(seconds=get_settings().replica_drain_seconds)
    with session_scope() as s:
        healthy, starting, gone = (s.get(Replica, i) for i in ids)
        types = set(s.exec(select(Event.type).where(Event.user_id == user_id)))
    assert (healthy.state, starting.state, gone.state) == ("draining", "draining", "stopped")
    assert before + drain <= as_utc(healthy.stop_at) <= utcnow() + drain  # time for its requests in flight
    assert as_utc(starting.stop_at) <= utcnow()  # it serves nothing yet
    assert {"deployment.stopped", "model.undeployed"} <= types and "deployment.deleted" not in types
    view = client.get(f"/api/v1/endpoints/{endpoint_id}", headers=headers).json()
    assert view["status"] == "stopping" and {w["state"] for w in view["workers"]} == {"draining", "stopped"}
    r = client.post(f"/api/v1/deployments/{endpoint_id}/test", headers=headers, json={"prompt": "hi"})
    assert_error(r, 503, "SERVICE_UNAVAILABLE")  # out of rotation at once
    assert client.delete(f"/api/v1/deployments/{endpoint_id}", headers=headers).json()["status"] == "stopping"

    with session_scope() as s:  # the drain period has passed: the controller stops them and the endpoint
        for replica in s.exec(select(Replica).where(Replica.endpoint_id == endpoint_id, Replica.state == "draining")):
            replica.stop_at = utcnow() - timedelta(seconds=1)
            s.add(replica)
    with session_scope() as s:
        Controller("test").reconcile(s, s.get(Endpoint, endpoint_id), {}, {}, utcnow(), Pass())
    with session_scope() as s:
        assert s.get(Endpoint, endpoint_id).status == "stopped"
        assert {r.state for r in s.exec(select(Replica).where(Replica.endpoint_id == endpoint_id))} == {"stopped"}
        assert s.exec(select(Event).where(Event.key == f"deployment:{endpoint_id}:deleted")).first() is not None


def test_an_endpoint_with_nothing_running_stops_at_once(client, adapter):
    headers, _, model_id = adapter
    user_id = me(client, headers)["id"]
    with session_scope() as s:
        endpoint = Endpoint(user_id=user_id, model_id=model_id, name=f"idle-{uuid.uuid4().hex[:6]}", status="active")
        s.add(endpoint)
        endpoint_id = endpoint.id
    r = client.delete(f"/api/v1/endpoints/{endpoint_id}", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "stopped", r.text
    r = client.delete(f"/api/v1/deployments/{endpoint_id}", headers=headers)
    assert r.json() == {"message": "Deployment deleted successfully", "id": endpoint_id, "status": "stopped"}
    with session_scope() as s:
        assert s.exec(select(Event).where(Event.key == f"deployment:{endpoint_id}:deleted")).first() is not None


def test_deleting_while_deploying_cancels_the_deploy(client, adapter, fake_trigger):
    """The deploy would otherwise bring the endpoint back when its flow reaches the endpoint."""
    headers, adapter_id, _ = adapter
    created = create(client, headers, adapter_id, config={"instance_type": cluster()}).json()
    r = client.delete(f"/api/v1/deployments/{created['deployment_id']}", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "stopped", r.text  # nothing was running yet
    with session_scope() as s:
        assert s.get(Workflow, created["workflow_id"]).status in ("CANCELLING", "CANCELLED")
