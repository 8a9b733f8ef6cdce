"""The REST basics in-process: auth (JWT, API keys), errors, paging, rate limits, models, credentials."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from fastapi.testclient import TestClient

from weft.db import session_scope
from weft.settings import get_settings
from weft.tables import Model


@pytest.fixture(scope="module")
def client(db):
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


def register(client: TestClient, name: str | None = None) -> tuple[dict[str, str], dict]:
    name = name or f"u{uuid.uuid4().hex[:8]}"
    r = client.post("/api/v1/auth/register", json={"email": f"{name}@example.com", "username": name,
                                                     "password": "long-enough-pw", "full_name": name.title()})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}, r.json()["user"]


def assert_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert {"message", "details"} <= set(r.json()["error"])


def test_register_login_token_me(client):
    headers, user = register(client, "carol")
    assert_error(client.post("/api/v1/auth/register", json={"email": "carol@example.com", "username": "carol2",
                                                            "password": "long-enough-pw"}), 409, "CONFLICT")
    login = client.post("/api/v1/auth/login", json={"email": "carol@example.com", "password": "long-enough-pw"})
    assert login.status_code == 200 and login.json()["token_type"] == "bearer"
    token = client.post("/api/v1/auth/token", json={"username": "carol", "password": "long-enough-pw"}).json()
    assert token["expires_in"] == get_settings().jwt_expires_seconds
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert me["id"] == user["id"] and me["full_name"] == "Carol" and me["model_count"] == 0
    assert_error(client.post("/api/v1/auth/login", json={"email": "carol@example.com", "password": "wrong-password"}),
                 401, "UNAUTHORIZED")
    assert_error(client.post("/api/v1/auth/register", json={"email": "not-an-email", "username": "x1y2",
                                                            "password": "long-enough-pw"}), 422, "VALIDATION_ERROR")


def test_missing_bad_and_expired_tokens_are_401(client):
    assert_error(client.get("/api/v1/models"), 401, "UNAUTHORIZED")
    assert_error(client.get("/api/v1/models", headers={"Authorization": "Bearer nonsense"}), 401, "UNAUTHORIZED")
    _, user = register(client)
    expired = jwt.encode({"sub": user["id"], "exp": datetime.now(timezone.utc) - timedelta(seconds=5)},
                         get_settings().signing_key(), algorithm="HS256")
    assert_error(client.get("/api/v1/models", headers={"Authorization": f"Bearer {expired}"}), 401, "UNAUTHORIZED")
    forged = jwt.encode({"sub": user["id"], "exp": datetime.now(timezone.utc) + timedelta(hours=1)}, "a-different-signing-key-of-32-bytes!",
                        algorithm="HS256")
    assert_error(client.get("/api/v1/models", headers={"Authorization": f"Bearer {forged}"}), 401, "UNAUTHORIZED")


def test_api_key_shown_once_stored_hashed_and_revocable(client):
    headers, _ = register(client)
    created = client.post("/api/v1/auth/api-keys", json={"name": "ci"}, headers=headers)
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("sk_weft_")
    assert client.get("/api/v1/models", headers={"X-API-Key": key}).status_code == 200
    listed = client.get("/api/v1/auth/api-keys", headers=headers).json()
    assert listed["meta"]["total"] == 1 and "key" not in listed["data"][0]
    from weft.tables import ApiKey

    with session_scope() as s:
        assert key not in str(s.get(ApiKey, created.json()["id"]).model_dump())
    assert client.delete(f"/api/v1/auth/api-keys/{created.json()['id']}", headers=headers).status_code == 204
    assert_error(client.get("/api/v1/models", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
    past = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    stale = client.post("/api/v1/auth/api-keys", json={"name": "old", "expires_at": past}, headers=headers).json()
    assert_error(client.get("/api/v1/models", headers={"X-API-Key": stale["key"]}), 401, "UNAUTHORIZED")


def add_model(user_id: str, name: str) -> str:
    model = Model(user_id=user_id, name=name, provider_type="disk", uri="/tmp/x", details={"parameter_count": 1})
    with session_scope() as s:
        s.add(model)
    return model.id


def test_models_are_paged_and_private(client):
    alice, a = register(client)
    bob, _ = register(client)
    ids = [add_model(a["id"], f"model-{i}") for i in range(3)]
    page = client.get("/api/v1/models", params={"limit": 2, "offset": 1}, headers=alice).json()
    assert page["meta"] == {"total": 3, "limit": 2, "offset": 1} and len(page["data"]) == 2
    assert client.get("/api/v1/models", params={"name": "model-2"}, headers=alice).json()["meta"]["total"] == 1
    full = client.get(f"/api/v1/models/{ids[0]}", headers=alice).json()
    assert full["details"] == {"parameter_count": 1} and full["deployments"] == []
    assert_error(client.get(f"/api/v1/models/{ids[0]}", headers=bob), 404, "NOT_FOUND")
    assert client.get("/api/v1/models", headers=bob).json()["meta"]["total"] == 0
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}):
        assert_error(client.get("/api/v1/models", params=bad, headers=alice), 422, "VALIDATION_ERROR")


def test_rate_limit_headers_and_429(client, monkeypatch):
    headers, _ = register(client)
    r = client.get("/", headers=headers)
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.headers)
    monkeypatch.setattr(get_settings(), "rate_limit_per_minute", 3)
    statuses = [client.get("/api/v1/auth/me", headers=headers).status_code for _ in range(5)]
    assert statuses[-1] == 429
    r = client.get("/api/v1/auth/me", headers=headers)
    assert_error(r, 429, "RATE_LIMITED")
    assert r.headers["x-ratelimit-remaining"] == "0" and int(r.headers["retry-after"]) >= 1


def test_unknown_route_and_health(client):
    assert_error(client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    health = client.get("/").json()
    assert health["status"] == "healthy" and health["version"]


def test_status_checks_components(client, prefect_server):
    body = client.get("/api/v1/status").json()
    assert body["database"] == "operational" and body["storage"] == "operational"
    assert body["prefect"] == "operational", body["issues"]


def test_credentials_live_in_prefect_secret_blocks(client, prefect_server):
    from prefect.blocks.system import Secret

    headers, _ = register(client)
    other, _ = register(client)
    r = client.post("/api/v1/credentials", json={"name": "hf", "provider_type": "hugging_face",
                                                  "secret": "hf_supersecret"}, headers=headers)
    assert r.status_code == 201 and "hf_supersecret" not in r.text
    cred = r.json()
    assert Secret.load(f"weft-credential-{cred['id']}").get() == "hf_supersecret"
    listed = client.get("/api/v1/credentials", headers=headers)
    assert listed.json()["meta"]["total"] == 1 and "hf_supersecret" not in listed.text
    assert_error(client.delete(f"/api/v1/credentials/{cred['id']}", headers=other), 404, "NOT_FOUND")
    assert client.delete(f"/api/v1/credentials/{cred['id']}", headers=headers).status_code == 204
    with pytest.raises(ValueError):
        Secret.load(f"weft-credential-{cred['id']}")


def test_provider_catalog(client):
    headers, _ = register(client)
    providers = client.get("/api/v1/providers", headers=headers).json()
    assert {p["name"] for p in providers["data"]} >= {"OpenAI", "Anthropic"}
    openai = next(p for p in providers["data"] if p["name"] == "OpenAI")
    models = client.get(f"/api/v1/providers/{openai['id']}/cloud-models", headers=headers).json()
    assert "openai/gpt-4o" in {m["uri"] for m in models["data"]}
    assert_error(client.get("/api/v1/providers/nope/cloud-models", headers=headers), 404, "NOT_FOUND")
