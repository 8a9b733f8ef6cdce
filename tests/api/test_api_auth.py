"""The API basics in-process: users, tokens, API keys, the error format, rate limits, health and status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from fastapi.testclient import TestClient

from tests.helpers.api import assert_error, me
from weft.db import session_scope
from weft.settings import get_settings
from weft.tables import ApiKey, Model

PASSWORD = "long-enough-pw"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_register_login_token_and_me(client):
    carol = unique("carol")
    r = client.post("/api/v1/auth/register", json={"email": f"{carol.title()}@Example.com", "username": carol,
                                                   "password": PASSWORD, "full_name": "Carol Cole"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["user"]["email"] == f"{carol}@example.com"
    assert set(body["user"]) == {"id", "email", "username", "created_at"}
    assert datetime.fromisoformat(body["user"]["created_at"]).tzinfo is not None

    login = client.post("/api/v1/auth/login", json={"email": f"{carol}@example.com", "password": PASSWORD})
    assert login.status_code == 200 and login.json()["token_type"] == "bearer"
    claims = jwt.decode(login.json()["access_token"], get_settings().signing_key(), algorithms=["HS256"])
    assert claims["sub"] == body["user"]["id"]
    assert claims["exp"] - claims["iat"] == get_settings().jwt_expires_seconds

    for username in (carol, f"{carol}@example.com"):
        token = client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD}).json()
        assert token["token_type"] == "bearer" and token["expires_in"] == get_settings().jwt_expires_seconds

    headers = {"Authorization": f"Bearer {token['access_token']}"}
    profile = me(client, headers)
    assert profile["id"] == body["user"]["id"] and profile["full_name"] == "Carol Cole"
    assert (profile["model_count"], profile["workflow_count"]) == (0, 0)
    with session_scope() as s:
        s.add(Model(user_id=profile["id"], name="m", provider_type="disk"))
    assert me(client, headers)["model_count"] == 1


def test_register_conflicts_and_invalid_input(client, auth_headers):
    dave = unique("dave")
    auth_headers(dave)
    error = assert_error(client.post("/api/v1/auth/register", json={"email": f"{dave.upper()}@example.com",
                                                                    "username": unique("dave"), "password": PASSWORD}),
                         409, "CONFLICT")
    assert error["details"] == {"field": "email"}
    error = assert_error(client.post("/api/v1/auth/register", json={"email": f"{unique('d')}@example.com",
                                                                    "username": dave, "password": PASSWORD}),
                         409, "CONFLICT")
    assert error["details"] == {"field": "username"}
    error = assert_error(client.post("/api/v1/auth/register", json={"email": "not-an-email", "username": "eve",
                                                                    "password": "short"}), 422, "VALIDATION_ERROR")
    assert {e["field"] for e in error["details"]["errors"]} == {"email", "password"}
    assert error["message"].startswith("Invalid parameter: ")


def test_wrong_password_and_unknown_user_are_401(client, auth_headers):
    frank = unique("frank")
    auth_headers(frank)
    assert_error(client.post("/api/v1/auth/login", json={"email": f"{frank}@example.com", "password": "not-the-pw"}),
                 401, "UNAUTHORIZED")
    assert_error(client.post("/api/v1/auth/token", json={"username": unique("nobody"), "password": PASSWORD}),
                 401, "UNAUTHORIZED")


def test_missing_bad_expired_and_forged_tokens_are_401(client, auth_headers):
    user_id = me(client, auth_headers())["id"]
    error = assert_error(client.get("/api/v1/models"), 401, "UNAUTHORIZED")
    assert "X-API-Key" in error["message"]
    now = datetime.now(UTC)
    expired = jwt.encode({"sub": user_id, "exp": now - timedelta(seconds=5)}, get_settings().signing_key(), "HS256")
    forged = jwt.encode({"sub": user_id, "exp": now + timedelta(hours=1)}, "another-key-of-at-least-32-bytes!", "HS256")
    ghost = jwt.encode({"sub": "no-such-user", "exp": now + timedelta(hours=1)}, get_settings().signing_key(), "HS256")
    for headers in ({"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"},
                    {"Authorization": f"Bearer {expired}"}, {"Authorization": f"Bearer {forged}"},
                    {"Authorization": f"Bearer {ghost}"}, {"X-API-Key": "sk_weft_guessed"}):
        r = client.get("/api/v1/auth/me", headers=headers)
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers["www-authenticate"] == "Bearer"


def test_api_key_shown_once_stored_hashed_and_revocable(client, auth_headers):
    headers, other = auth_headers(), auth_headers()
    created = client.post("/api/v1/auth/api-keys", json={"name": "ci", "expires_at": "2099-01-01T00:00:00Z"},
                          headers=headers)
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    assert key.startswith("sk_weft_") and len(key) > 40 and key_id.startswith("apk_")
    assert me(client, {"X-API-Key": key})["id"] == me(client, headers)["id"]
    assert me(client, {"Authorization": f"Bearer {key}"})["id"] == me(client, headers)["id"]  # document 003 style

    listed = client.get("/api/v1/auth/api-keys", headers=headers).json()
    assert listed["meta"] == {"total": 1, "limit": 20, "offset": 0}
    assert listed["data"][0]["id"] == key_id and "key" not in listed["data"][0] and key not in str(listed)
    with session_scope() as s:
        row = s.get(ApiKey, key_id)
        assert key not in str(row.model_dump()) and len(row.key_hash) == 64

    assert_error(client.delete(f"/api/v1/auth/api-keys/{key_id}", headers=other), 404, "NOT_FOUND")
    assert client.delete(f"/api/v1/auth/api-keys/{key_id}", headers=headers).status_code == 204
    assert_error(client.get("/api/v1/auth/me", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
    assert_error(client.delete(f"/api/v1/auth/api-keys/{key_id}", headers=headers), 404, "NOT_FOUND")


def test_expired_api_key_is_401_and_a_past_expiry_is_rejected(client, auth_headers):
    headers = auth_headers()
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    error = assert_error(client.post("/api/v1/auth/api-keys", json={"name": "old", "expires_at": past},
                                     headers=headers), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["field"] == "expires_at"
    key = client.post("/api/v1/auth/api-keys", json={"name": "soon", "expires_at": (datetime.now(UTC)
                      + timedelta(hours=1)).isoformat()}, headers=headers).json()
    assert me(client, {"X-API-Key": key["key"]})
    with session_scope() as s:  # time passes
        s.get(ApiKey, key["id"]).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert_error(client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]}), 401, "UNAUTHORIZED")


def test_rate_limit_headers_on_every_response_and_429(client, auth_headers, monkeypatch):
    headers = auth_headers()
    for r in (client.get("/"), client.get("/api/v1/auth/me", headers=headers), client.get("/api/v1/nowhere")):
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-request-id"} <= set(r.headers)
    assert int(client.get("/").headers["x-ratelimit-reset"]) > datetime.now(UTC).timestamp()

    fresh = auth_headers()  # registered first: registering counts against the client address, not this user
    monkeypatch.setattr(get_settings(), "rate_limit_per_minute", 3)
    responses = [client.get("/api/v1/auth/me", headers=fresh) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    error = assert_error(responses[-1], 429, "RATE_LIMITED")
    assert error["details"]["limit"] == 3 and 1 <= int(responses[-1].headers["retry-after"]) <= 60
    assert responses[-1].headers["x-ratelimit-limit"] == "3"
    monkeypatch.setattr(get_settings(), "rate_limit_per_minute", 600)
    assert client.get("/api/v1/auth/me", headers=fresh).status_code == 200  # the limit is read per request


def test_health_unknown_routes_and_unhandled_errors(db):
    from api.main import create_app

    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app) as client:
        health = client.get("/").json()
        assert health["status"] == "healthy" and health["message"] == "Welcome to weft" and health["version"]
        assert datetime.fromisoformat(health["timestamp"]).tzinfo is not None
        assert_error(client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
        assert_error(client.put("/api/v1/auth/me"), 405, "METHOD_NOT_ALLOWED")
        r = client.get("/boom", headers={"X-Request-ID": "trace-123"})
        assert_error(r, 500, "SERVICE_ERROR")
        assert r.json()["request_id"] == "trace-123" and "secret internals" not in r.text
        assert "x-ratelimit-limit" in r.headers


def test_status_checks_components_for_real(client, prefect_server):
    body = client.get("/api/v1/status").json()
    assert body == {"api": "operational", "database": "operational", "storage": "operational",
                    "prefect": "operational", "issues": []}


def test_status_reports_an_unreachable_prefect(client, prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        body = client.get("/api/v1/status").json()
    assert body["prefect"] == "degraded" and body["database"] == "operational"
    assert [i["component"] for i in body["issues"]] == ["prefect"]
