"""Document 000's deploy call: every field is acted on or refused naming it, and the answer says which
engine will run."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.helpers.api import assert_error, me
from weft.db import session_scope
from weft.serving import launch
from weft.tables import Cluster, Model


def safe_model_of(client, auth_headers, model_dir: Path) -> tuple[dict[str, str], str]:
    """A new user's model whose security scan is SAFE (deployable), and the user's headers."""
    from weft.testing.registry import register_model

    headers = auth_headers()
    model_id = register_model(me(client, headers)["id"], model_dir)
    with session_scope() as s:
        model = s.get(Model, model_id)
        model.scan, model.scan_verified = {"status": "SAFE", "total_issues": 0}, True
        s.add(model)
    return headers, model_id


@pytest.fixture
def safe_model(client, auth_headers, tiny_model_dir: Path) -> tuple[dict[str, str], str]:
    """A user's model whose security scan is SAFE (deployable), and the user's headers."""
    return safe_model_of(client, auth_headers, tiny_model_dir)


def deploy(client, headers, model_id: str, **body):
    return client.post(f"/api/v1/models/{model_id}/deploy", headers=headers,
                       json={"endpoint_name": f"ep-{uuid.uuid4().hex[:8]}", **body})


def test_the_answer_and_the_endpoint_say_the_engine_that_runs(client, safe_model, fake_trigger, prefect_server,
                                                               monkeypatch):
    headers, model_id = safe_model
    monkeypatch.setattr(launch, "engine_available", lambda: "transformers")  # no CUDA or no vLLM here
    for asked in (None, "transformers"):
        r = deploy(client, headers, model_id, **({"endpoint_type": asked} if asked else {}))
        assert r.status_code == 202, r.text
        assert r.json()["endpoint_type"] == "transformers" and fake_trigger[-1][2]["engine"] == asked
        assert client.get(f"/api/v1/endpoints/{r.json()['id']}", headers=headers).json()["endpoint_type"] == \
            "transformers"
    error = assert_error(deploy(client, headers, model_id, endpoint_type="vllm"), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "endpoint_type" and "cannot run on cpu" in error["message"]
    error = assert_error(deploy(client, headers, model_id, endpoint_type="tgi"), 422, "VALIDATION_ERROR")
    assert "endpoint_type" in error["message"]
    assert len(fake_trigger) == 2  # the refusals started nothing


def test_instance_type_names_a_cluster_and_quantization_is_refused(client, safe_model, fake_trigger,
                                                                   prefect_server, monkeypatch):
    headers, model_id = safe_model
    pool = f"edge-{uuid.uuid4().hex[:6]}"
    with session_scope() as s:
        cluster = Cluster(name=f"Edge {pool}", pool_name=pool, hardware={"gpus": [{"name": "T4", "memory_gb": 16}]})
        s.add(cluster)
        s.flush()
        cluster_id = cluster.id
    monkeypatch.setattr(launch, "engine_available", lambda: "vllm")  # as on a machine with the [gpu] extra
    r = deploy(client, headers, model_id, endpoint_type="vllm", instance_type=pool, quantization="none")
    assert r.status_code == 202, r.text
    assert r.json()["endpoint_type"] == "vllm" and fake_trigger[-1][2]["cluster_id"] == cluster_id

    error = assert_error(deploy(client, headers, model_id, instance_type="g4dn.xlarge"), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "instance_type" and "registered cluster" in error["message"]
    error = assert_error(deploy(client, headers, model_id, quantization="int8"), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] == "quantization" and "as they are stored" in error["message"]
    assert len(fake_trigger) == 1


def test_deploying_onto_an_endpoint_by_name_or_id_adds_a_revision(client, safe_model, fake_trigger, prefect_server,
                                                                   auth_headers, tiny_model_dir):
    headers, model_id = safe_model
    first = deploy(client, headers, model_id, endpoint_name="Test Endpoint")
    assert first.status_code == 202 and first.json()["model"] == "test-endpoint", first.text
    endpoint_id = first.json()["id"]
    for body in ({"endpoint_name": "Test Endpoint"}, {"endpoint_id": endpoint_id}):
        r = client.post(f"/api/v1/models/{model_id}/deploy", headers=headers, json={**body, "traffic_percent": 10})
        assert r.status_code == 202 and r.json()["id"] == endpoint_id, r.text
        spec = fake_trigger[-1][2]
        assert spec["endpoint_name"] == "Test Endpoint" and spec["traffic_percent"] == 10
    other, other_model = safe_model_of(client, auth_headers, tiny_model_dir)
    r = client.post(f"/api/v1/models/{other_model}/deploy", headers=other, json={"endpoint_id": endpoint_id})
    assert_error(r, 404, "NOT_FOUND")  # another user's endpoint
