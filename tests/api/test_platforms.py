"""Compute platforms, resources and job costs (document 003) against a stand-in GPU cloud API: connect
verifies the key with the cloud, keeps it in a Secret block and creates the platform's work pool."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.api import assert_error, me
from tests.helpers.gpu_cloud import LAMBDA_REFUSAL, RUNPOD_REFUSAL, GpuCloudStandIn

KEY = "rp-good-key"
PRICE = 1.8  # overrides the catalog's 0.69 for runpod/gpu-rtx4090


@pytest.fixture
def cloud(monkeypatch):
    """The stand-in, with weft's settings pointing runpod and lambda at it (and one price overridden)."""
    from weft.settings import get_settings

    with GpuCloudStandIn(KEY) as stand_in:
        monkeypatch.setenv("WEFT_PLATFORM_URLS", json.dumps({p: stand_in.url(p) for p in ("runpod", "lambda")}))
        monkeypatch.setenv("WEFT_RESOURCE_PRICES", json.dumps({"runpod/gpu-rtx4090": PRICE}))
        get_settings.cache_clear()
        yield stand_in
    get_settings.cache_clear()


@pytest.fixture
def training_template(prefect_server):
    """`fine_tune/gpu`, the deployment connect copies onto a cloud's pool (the test server has none)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("fine_tune")
        client.create_deployment(flow_id=flow_id, name="gpu", entrypoint="flows/fine_tune.py:fine_tune")


def kubernetes_clusters() -> list[str]:
    """The pools of the Kubernetes clusters other tests of the session added."""
    from sqlmodel import select

    from weft.db import session_scope
    from weft.tables import Cluster

    with session_scope() as s:
        return [c.pool_name for c in s.exec(select(Cluster).where(Cluster.pool_type == "kubernetes"))]


def platforms(client, headers) -> dict[str, dict]:
    r = client.get("/api/v1/platforms", headers=headers)
    assert r.status_code == 200, r.text
    return {p["name"]: p for p in r.json()["platforms"]}


def prefect_state(pool: str) -> tuple[bool, list[str]]:
    """Whether the work pool exists, and the names of its deployments."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            return False, []
        deployments = client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
        return True, [d.name for d in deployments]


def secret_exists(name: str) -> bool:
    from prefect.blocks.system import Secret

    try:
        return Secret.load(name).get() is not None
    except ValueError:
        return False


def test_connect_verify_list_and_disconnect(client, auth_headers, cloud, training_template):
    headers = auth_headers()
    listed = platforms(client, headers)
    assert listed["local"]["status"] == "connected" and listed["runpod"]["status"] == "disconnected"
    assert listed["kubernetes"]["status"] == ("connected" if kubernetes_clusters() else "disconnected")
    assert listed["runpod"]["display_name"] == "RunPod"

    error = assert_error(client.post("/api/v1/platforms/runpod/connect", headers=headers,
                                     json={"credentials": {"api_key": "wrong"}}), 502, "PLATFORM_NOT_CONNECTED")
    assert RUNPOD_REFUSAL in error["message"] and error["details"]["provider_status"] == 401
    runpod = platforms(client, headers)["runpod"]
    assert runpod["status"] == "error" and RUNPOD_REFUSAL in runpod["reason"]
    assert prefect_state("runpod") == (False, []) and not secret_exists("weft-platform-runpod")
    error = assert_error(client.post("/api/v1/platforms/lambda/connect", headers=headers,
                                     json={"credentials": {"api_key": "wrong"}}), 502, "PLATFORM_NOT_CONNECTED")
    assert LAMBDA_REFUSAL in error["message"]  # Lambda's nested {"error": {"message"}} is read too

    r = client.post("/api/v1/platforms/runpod/connect", headers=headers, json={"credentials": {"api_key": KEY}})
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "platform": "runpod", "status": "connected", "pool": "runpod"}
    assert cloud.requests[-1] == ("/v1/pods", KEY)
    runpod = platforms(client, headers)["runpod"]
    assert runpod["status"] == "connected" and runpod["reason"] is None and runpod["last_verified"]
    assert prefect_state("runpod") == (True, ["runpod"])  # fine_tune/runpod
    from prefect.blocks.system import Secret
    assert Secret.load("weft-platform-runpod").get() == KEY
    assert KEY not in r.text and KEY not in client.get("/api/v1/platforms", headers=headers).text

    r = client.delete("/api/v1/platforms/runpod", headers=headers)
    assert r.status_code == 200 and r.json() == {"success": True, "message": "Platform disconnected"}
    assert prefect_state("runpod") == (False, []) and not secret_exists("weft-platform-runpod")
    assert platforms(client, headers)["runpod"]["status"] == "disconnected"
    assert_error(client.delete("/api/v1/platforms/runpod", headers=headers), 409, "PLATFORM_NOT_CONNECTED")


def test_bad_requests(client, auth_headers, monkeypatch):
    from weft.net import free_port
    from weft.settings import get_settings

    headers = auth_headers()
    assert_error(client.post("/api/v1/platforms/nowhere/connect", headers=headers, json={"credentials": {}}),
                 404, "NOT_FOUND")
    assert_error(client.post("/api/v1/platforms/local/connect", headers=headers, json={"credentials": {}}),
                 422, "VALIDATION_ERROR")
    assert_error(client.post("/api/v1/platforms/runpod/connect", headers=headers, json={"credentials": {}}),
                 422, "VALIDATION_ERROR")
    monkeypatch.setenv("WEFT_PLATFORM_URLS", json.dumps({"runpod": f"http://127.0.0.1:{free_port()}/v1"}))
    get_settings.cache_clear()
    try:
        error = assert_error(client.post("/api/v1/platforms/runpod/connect", headers=headers,
                                         json={"credentials": {"api_key": KEY}}), 502, "PLATFORM_NOT_CONNECTED")
    finally:
        get_settings.cache_clear()
    assert "could not be reached" in error["message"] and error["details"]["url"].endswith("/v1/pods")
    assert_error(client.get("/api/v1/resources/runpod/gpu-rtx4090/pricing", headers=headers), 409,
                 "PLATFORM_NOT_CONNECTED")


def test_resources_pricing_and_job_costs(client, auth_headers, cloud, training_template, fake_trigger,
                                         tiny_model_dir: Path):
    from weft.db import session_scope
    from weft.tables import Placement
    from weft.testing.registry import register_dataset, register_model

    headers = auth_headers()
    assert client.post("/api/v1/platforms/runpod/connect", headers=headers,
                       json={"credentials": {"api_key": KEY}}).status_code == 200
    try:
        r = client.get("/api/v1/resources", headers=headers, params={"provider": "runpod"})
        assert r.status_code == 200, r.text
        found = {x["id"]: x for x in r.json()["resources"]}
        assert set(found) == {"gpu-rtx4090", "gpu-a100-80gb", "gpu-h100-80gb"}
        rtx = found["gpu-rtx4090"]
        assert rtx["provider"] == "runpod" and rtx["vram_gb"] == 24 and rtx["gpu_count"] == 1 and rtx["pool"] == "runpod"
        assert rtx["pricing"]["hourly_rate"] == PRICE and found["gpu-a100-80gb"]["pricing"]["hourly_rate"] == 1.64
        assert rtx["available"] is False  # no worker of the runpod pool is online
        everywhere = {(x["provider"], x["id"]) for x in client.get("/api/v1/resources", headers=headers).json()["resources"]}
        assert {("local", "local-cpu"), ("runpod", "gpu-rtx4090")} <= everywhere
        assert client.get("/api/v1/resources", headers=headers, params={"available": True}).json()["resources"] == []

        r = client.get("/api/v1/resources/runpod/gpu-rtx4090/pricing", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"resource_id": "gpu-rtx4090", "provider": "runpod",
                            "pricing": {"hourly_rate": PRICE, "currency": "USD", "billing_increment": 60,
                                        "minimum_charge": 0.0},
                            "availability": {"available": False, "queue_length": 0, "estimated_wait_minutes": None}}
        assert_error(client.get("/api/v1/resources/runpod/gpu-nothing/pricing", headers=headers), 409,
                     "RESOURCE_UNAVAILABLE")

        user_id = me(client, headers)["id"]
        config = {"base_model": register_model(user_id, tiny_model_dir), "algorithm": "lora",
                  "max_steps": 5_000_000,  # long enough for a tiny model's estimate to reach minutes
                  "dataset_id": register_dataset(user_id, "priced codes", [{"prompt": "q", "completion": "a"}] * 8)}
        jobs = "/api/v1/jobs"
        assert_error(client.post(jobs, headers=headers, json={"config": {**config, "provider": "runpod",
                                                                         "resource_id": "gpu-nothing"}}),
                     409, "RESOURCE_UNAVAILABLE")
        assert_error(client.post(jobs, headers=headers, json={"config": {**config, "provider": "lambda",
                                                                         "resource_id": "gpu-1x-a10"}}),
                     409, "PLATFORM_NOT_CONNECTED")
        error = assert_error(client.post(jobs, headers=headers, json={"config": {**config, "provider": "runpod"}}),
                             400, "INVALID_CONFIG")
        assert error["details"]["field"] == "resource_id"
        assert fake_trigger == []  # refused before anything was stored or started
        error = assert_error(client.post(jobs, headers=headers, json={"config": {**config, "provider": "nowhere"}}),
                             400, "INVALID_CONFIG")
        assert error["details"]["field"] == "provider"

        r = client.post(jobs, headers=headers, json={"config": {**config, "provider": "runpod",
                                                                "resource_id": "gpu-rtx4090"}})
        assert r.status_code == 201, r.text
        created = r.json()
        minutes = created["estimated_duration_minutes"]
        assert minutes and created["provider"] == "runpod" and created["resource_id"] == "gpu-rtx4090"
        assert created["estimated_cost"] == round(math.ceil(minutes * 60 / 60) * 60 / 3600 * PRICE, 4)
        with session_scope() as s:
            placed = s.get(Placement, created["job_id"])
            assert (placed.pool_name, placed.hourly_rate, placed.billing_increment) == ("runpod", PRICE, 60)
        job = client.get(f"{jobs}/{created['job_id']}", headers=headers).json()
        assert job["config"]["provider"] == "runpod" and job["cost"] is None  # not run yet

        r = client.post(jobs, headers=headers, json={"config": {**config, "provider": "local"}})  # a local pool
        assert r.status_code == 201, r.text
        with session_scope() as s:
            placed = s.get(Placement, r.json()["job_id"])
            assert placed.provider == "local" and placed.pool_name == "cpu" and placed.resource_id == "local-cpu"
    finally:
        client.delete("/api/v1/platforms/runpod", headers=headers)


def test_cost_is_billed_by_increment_with_a_minimum():
    from weft.compute.placement import cost
    from weft.tables import Placement

    placed = Placement(workflow_id="w", provider="p", resource_id="r", pool_name="p", hourly_rate=3.6,
                       billing_increment=60, minimum_charge=0.05)
    assert cost(placed, 61) == round(120 / 3600 * 3.6, 4)  # two started minutes
    assert cost(placed, 1) == 0.06 and cost(placed, None) is None
    assert cost(placed.model_copy(update={"minimum_charge": 0.5}), 61) == 0.5
    assert cost(placed.model_copy(update={"hourly_rate": None}), 61) is None
