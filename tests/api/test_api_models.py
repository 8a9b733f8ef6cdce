"""The read-side resources in-process: models (paging, filters, privacy), credentials, the provider catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.helpers.api import assert_error, me
from weft.db import session_scope
from weft.tables import Credential, Model


def add_model(user_id: str, name: str, age_minutes: int = 0, **fields) -> str:
    """Insert a model row directly, as the onboarding flows do."""
    at = datetime.now(UTC) - timedelta(minutes=age_minutes)
    model = Model(user_id=user_id, name=name, provider_type=fields.pop("provider_type", "disk"), uri=f"/models/{name}",
                  created_at=at, updated_at=at, **fields)
    with session_scope() as s:
        s.add(model)
    return model.id


@pytest.fixture
def alice_models(client: TestClient, auth_headers) -> tuple[dict[str, str], list[str]]:
    headers = auth_headers()
    user_id = me(client, headers)["id"]
    ids = [add_model(user_id, f"Model-{i}", age_minutes=10 - i) for i in range(3)]  # Model-2 is the newest
    ids.append(add_model(user_id, "gpt-4o", provider_type="cloud_model", type="cloud"))
    ids.append(add_model(user_id, "old-tuned", age_minutes=60, type="fine-tuned", status="archived",
                         base_model="Model-0", details={"parameter_count": 576}, metrics={"accuracy": 0.9},
                         parameters={"adapter_type": "lora"}, tags=[{"name": "auto", "color": "#fff"}]))
    return headers, ids


def test_models_list_is_paged_newest_first(client, alice_models):
    headers, ids = alice_models
    page = client.get("/api/v1/models", headers=headers).json()
    assert page["meta"] == {"total": 5, "limit": 20, "offset": 0}
    assert [m["name"] for m in page["data"]] == ["gpt-4o", "Model-2", "Model-1", "Model-0", "old-tuned"]
    summary = page["data"][0]
    assert set(summary) == {"id", "ID", "name", "description", "base_model", "type", "specialization", "status",
                            "modality", "provider_type", "uri", "tags", "created_at", "updated_at", "job_id",
                            "storage_path", "lora_adapters_path", "gguf_path", "merged_path", "training_metrics",
                            "total_size"}
    second = client.get("/api/v1/models", params={"limit": 2, "offset": 1}, headers=headers).json()
    assert second["meta"] == {"total": 5, "limit": 2, "offset": 1}
    assert [m["name"] for m in second["data"]] == ["Model-2", "Model-1"]
    beyond = client.get("/api/v1/models", params={"offset": 10}, headers=headers).json()
    assert beyond == {"data": [], "meta": {"total": 5, "limit": 20, "offset": 10}, "total": 5, "page": 1, "limit": 20}


@pytest.mark.parametrize(("params", "filtered"), [
    ({"type": "cloud"}, ["gpt-4o"]),
    ({"type": "fine-tuned", "status": "archived"}, ["old-tuned"]),
    ({"status": "active", "modality": "llm"}, ["gpt-4o", "Model-2", "Model-1", "Model-0"]),
    ({"name": "model-"}, ["Model-2", "Model-1", "Model-0"]),
    ({"name": "%"}, []),
])
def test_models_list_filters(client, alice_models, params, filtered):
    headers, _ = alice_models
    page = client.get("/api/v1/models", params=params, headers=headers).json()
    assert [m["name"] for m in page["data"]] == filtered and page["meta"]["total"] == len(filtered)


@pytest.mark.parametrize(("params", "parameter"), [({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                                                    ({"offset": -1}, "offset")])
def test_out_of_range_paging_is_422(client, auth_headers, params, parameter):
    error = assert_error(client.get("/api/v1/models", params=params, headers=auth_headers()), 422, "VALIDATION_ERROR")
    assert error["details"]["parameter"] == parameter and error["message"].startswith(f"Invalid parameter: {parameter}")
    if parameter == "limit":
        assert error["message"] == "Invalid parameter: limit must be between 1 and 100"
        assert error["details"] == {"parameter": "limit", "constraint": "1-100"}


def test_non_integer_limit_is_422(client, auth_headers):
    error = assert_error(client.get("/api/v1/models", params={"limit": "ten"}, headers=auth_headers()),
                         422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] == "query.limit"


def test_get_model_is_full_and_private(client, auth_headers, alice_models):
    alice, ids = alice_models
    full = client.get(f"/api/v1/models/{ids[-1]}", headers=alice).json()
    assert full["details"] == {"parameter_count": 576} and full["metrics"] == {"accuracy": 0.9}
    assert full["parameters"] == {"adapter_type": "lora"} and full["tags"] == [{"name": "auto", "color": "#fff"}]
    assert full["deployments"] == [] and full["base_model"] == "Model-0" and full["workflow_id"] is None
    assert {"hardware", "storage_uri", "provider_id", "cloud_model_id"} <= set(full)
    assert datetime.fromisoformat(full["created_at"]).tzinfo is not None

    bob = auth_headers()
    error = assert_error(client.get(f"/api/v1/models/{ids[0]}", headers=bob), 404, "NOT_FOUND")
    assert error["details"] == {"resource": "model", "id": ids[0]}
    assert client.get("/api/v1/models", headers=bob).json()["meta"]["total"] == 0
    assert_error(client.get("/api/v1/models/no-such-model", headers=alice), 404, "NOT_FOUND")


def test_credentials_live_in_prefect_secret_blocks(client, auth_headers, prefect_server):
    from prefect.blocks.system import Secret

    owner, other = auth_headers(), auth_headers()
    r = client.post("/api/v1/credentials", json={"name": "hf", "provider_type": "hugging_face",
                                                 "secret": "hf_supersecret"}, headers=owner)
    assert r.status_code == 201 and "hf_supersecret" not in r.text
    cred = r.json()
    assert set(cred) == {"id", "name", "provider_type", "created_at"}
    block = f"weft-credential-{cred['id']}"
    assert Secret.load(block).get() == "hf_supersecret"
    with session_scope() as s:
        row = s.get(Credential, cred["id"])
        assert row.block_name == block and "hf_supersecret" not in str(row.model_dump())

    listed = client.get("/api/v1/credentials", headers=owner)
    assert listed.json()["meta"]["total"] == 1 and "hf_supersecret" not in listed.text
    assert client.get("/api/v1/credentials", headers=other).json()["meta"]["total"] == 0
    assert_error(client.post("/api/v1/credentials", json={"name": "x", "provider_type": "openai"}, headers=owner),
                 422, "VALIDATION_ERROR")

    assert_error(client.delete(f"/api/v1/credentials/{cred['id']}", headers=other), 404, "NOT_FOUND")
    assert client.delete(f"/api/v1/credentials/{cred['id']}", headers=owner).status_code == 204
    with pytest.raises(ValueError):
        Secret.load(block)
    assert client.get("/api/v1/credentials", headers=owner).json()["meta"]["total"] == 0


def test_provider_catalog(client, auth_headers):
    headers = auth_headers()
    providers = client.get("/api/v1/providers", headers=headers).json()
    assert {p["name"] for p in providers["data"]} >= {"OpenAI", "Anthropic"}
    assert providers["meta"]["total"] == len(providers["data"])
    openai = next(p for p in providers["data"] if p["name"] == "OpenAI")
    models = client.get(f"/api/v1/providers/{openai['id']}/cloud-models", headers=headers).json()
    assert "openai/gpt-4o" in {m["uri"] for m in models["data"]}
    assert all(m["provider_id"] == openai["id"] for m in models["data"])
    assert_error(client.get("/api/v1/providers/nope/cloud-models", headers=headers), 404, "NOT_FOUND")
    assert_error(client.get("/api/v1/providers"), 401, "UNAUTHORIZED")
