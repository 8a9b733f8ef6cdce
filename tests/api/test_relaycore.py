"""RelayCore through the API (document 000): a user's connector (verified, its key in a Prefect Secret
block), vehicles read live and paged, recommendations sent and answered with RelayCore's receipt, and the
errors: a refused key, an unreachable or refusing RelayCore (502 UPSTREAM_ERROR), no connector (409).
RelayCore is the local stand-in (tests/helpers/relaycore.py), so weft's real client speaks real HTTP."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.api import assert_error, me
from tests.helpers.relaycore import VEHICLES, RelayCoreStandIn
from weft.db import session_scope
from weft.net import free_port
from weft.tables import Endpoint

API = "/api/v1/integrations/relaycore"
KEY = "rc_live_" + "k" * 24
RECOMMENDATIONS = {"vin": VEHICLES[0]["vin"], "recommendations": [
    {"description": "Brake pad replacement recommended", "priority": "high",
     "details": {"current_mileage": 35000, "pad_thickness": "3mm", "minimum_thickness": "2mm"},
     "estimated_cost": 299.99, "due_date": "2025-08-08T00:00:00Z"},
    {"description": "Oil change recommended", "priority": "medium",
     "details": {"current_mileage": 35000, "last_service_mileage": 30000, "service_interval": 5000},
     "estimated_cost": 75.99, "due_date": "2025-08-15T00:00:00Z"}]}


@pytest.fixture(scope="module")
def relaycore():
    with RelayCoreStandIn(KEY, refuse_vins={VEHICLES[2]["vin"]}) as server:
        yield server


@pytest.fixture
def configured(client, auth_headers, relaycore, prefect_server) -> dict[str, str]:
    """A user whose connector points at the stand-in."""
    headers = auth_headers()
    r = client.put(API, json={"base_url": relaycore.base_url, "api_key": KEY}, headers=headers)
    assert r.status_code == 200, r.text
    return headers


def test_configure_checks_the_key_and_keeps_it_in_a_secret_block(client, auth_headers, relaycore, prefect_server):
    from prefect.blocks.system import Secret

    headers = auth_headers()
    assert client.get(API, headers=headers).json() == {"configured": False, "base_url": None}
    calls = len(relaycore.requests)
    wrong = client.put(API, json={"base_url": relaycore.base_url, "api_key": "rc_wrong"}, headers=headers)
    error = assert_error(wrong, 422, "INVALID_CREDENTIALS")
    assert "invalid API key" in error["message"] and error["details"]["upstream"]["status"] == 401
    assert "rc_wrong" not in wrong.text
    assert client.get(API, headers=headers).json()["configured"] is False  # nothing saved

    r = client.put(API, json={"base_url": relaycore.base_url + "/", "api_key": KEY}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"configured": True, "base_url": relaycore.base_url} and KEY not in r.text
    checks = relaycore.requests[calls:]
    assert [c["authorization"] for c in checks] == ["Bearer rc_wrong", f"Bearer {KEY}"]
    assert all(c["path"].startswith("/api/v1/vehicles?limit=1") for c in checks)  # verified by listing one
    assert client.get(API, headers=headers).json() == {"configured": True, "base_url": relaycore.base_url}
    block = f"weft-relaycore-{me(client, headers)['id']}"
    assert Secret.load(block).get() == {"base_url": relaycore.base_url, "api_key": KEY}
    assert client.get(API, headers=auth_headers()).json()["configured"] is False  # per user

    assert client.delete(API, headers=headers).status_code == 204
    assert client.get(API, headers=headers).json()["configured"] is False
    with pytest.raises(ValueError):
        Secret.load(block)
    assert_error(client.delete(API, headers=headers), 404, "NOT_FOUND")
    assert_error(client.put(API, json={"api_key": KEY}, headers=headers), 422, "VALIDATION_ERROR")  # no default URL
    assert_error(client.put(API, json={"base_url": "not a url", "api_key": KEY}, headers=headers), 422,
                 "VALIDATION_ERROR")


def test_vehicles_are_read_live_and_paged(client, configured):
    first = client.get(f"{API}/vehicles", params={"limit": 2}, headers=configured)
    assert first.status_code == 200, first.text
    assert first.json()["meta"] == {"total": 3, "limit": 2, "offset": 0}
    assert [v["vin"] for v in first.json()["data"]] == [v["vin"] for v in VEHICLES[:2]]
    assert first.json()["data"][0] == VEHICLES[0]  # document 000's vehicle, field for field
    rest = client.get(f"{API}/vehicles", params={"limit": 2, "offset": 2}, headers=configured).json()
    assert rest["meta"] == {"total": 3, "limit": 2, "offset": 2} and [v["id"] for v in rest["data"]] == ["veh_555000111"]
    assert_error(client.get(f"{API}/vehicles", params={"limit": 0}, headers=configured), 422, "VALIDATION_ERROR")


def test_recommendations_are_sent_and_answered_with_the_receipt(client, configured, relaycore):
    before = len(relaycore.received)
    r = client.post(f"{API}/recommendations", json=RECOMMENDATIONS, headers=configured)
    assert r.status_code == 201, r.text
    receipt = r.json()
    assert set(receipt) == {"id", "vin", "recommendations_count", "status", "created_at"}
    assert receipt["vin"] == RECOMMENDATIONS["vin"] and receipt["recommendations_count"] == 2
    assert receipt["status"] == "sent" and receipt["id"].startswith("rec_")
    assert relaycore.received[before:] == [RECOMMENDATIONS]
    assert relaycore.requests[-1]["authorization"] == f"Bearer {KEY}"

    bad = {**RECOMMENDATIONS, "recommendations": [{**RECOMMENDATIONS["recommendations"][0], "priority": "urgent"}]}
    assert_error(client.post(f"{API}/recommendations", json=bad, headers=configured), 422, "VALIDATION_ERROR")
    refused = client.post(f"{API}/recommendations", json={**RECOMMENDATIONS, "vin": VEHICLES[2]["vin"]},
                          headers=configured)
    details = assert_error(refused, 502, "UPSTREAM_ERROR")["details"]
    assert details["status"] == 422 and "no vehicle with VIN" in details["message"]
    assert details["url"] == f"{relaycore.base_url}/recommendations"
    assert len(relaycore.received) == before + 1


def test_unreachable_relaycore_is_an_upstream_error(client, auth_headers, prefect_server):
    headers = auth_headers()
    with RelayCoreStandIn(KEY) as gone:
        assert client.put(API, json={"base_url": gone.base_url, "api_key": KEY}, headers=headers).status_code == 200
    for r in (client.get(f"{API}/vehicles", headers=headers),
              client.post(f"{API}/recommendations", json=RECOMMENDATIONS, headers=headers)):
        details = assert_error(r, 502, "UPSTREAM_ERROR")["details"]
        assert details["url"].startswith(gone.base_url) and details["provider"] == "relaycore"
        assert KEY not in r.text
    closed = f"http://127.0.0.1:{free_port()}/api/v1"
    error = assert_error(client.put(API, json={"base_url": closed, "api_key": KEY}, headers=auth_headers()), 502,
                         "UPSTREAM_ERROR")
    assert error["details"]["url"] == f"{closed}/vehicles"


def test_without_a_connector_every_route_says_so(client, auth_headers, prefect_server):
    headers = auth_headers()
    for r in (client.get(f"{API}/vehicles", headers=headers),
              client.post(f"{API}/recommendations", json=RECOMMENDATIONS, headers=headers)):
        assert "PUT /api/v1/integrations/relaycore" in assert_error(r, 409, "INTEGRATION_NOT_CONFIGURED")["message"]
    assert_error(client.get(f"{API}/vehicles"), 401, "UNAUTHORIZED")


def test_the_workflow_step_checks_the_endpoint_and_the_connector(client, auth_headers, relaycore, fake_trigger):
    headers = auth_headers()
    user_id = me(client, headers)["id"]
    with session_scope() as s:
        endpoint = Endpoint(user_id=user_id, model_id="m", name=f"rc-{uuid.uuid4().hex[:8]}", status="active")
        s.add(endpoint)
        s.commit()
        endpoint_id = endpoint.id
    step = {"workflow_total_steps": 1, "step_number": 1, "endpoint_id": endpoint_id, "limit": 3,
            "customer_concern": "Strange noise when braking", "trigger_workflow": True}
    route = f"{API}/recommendations-workflow"
    assert_error(client.post(route, json={**step, "endpoint_id": "nope"}, headers=headers), 422, "VALIDATION_ERROR")
    assert_error(client.post(route, json=step, headers=headers), 409, "INTEGRATION_NOT_CONFIGURED")
    assert fake_trigger == []

    assert client.put(API, json={"base_url": relaycore.base_url, "api_key": KEY}, headers=headers).status_code == 200
    r = client.post(route, json=step, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["workflow_type"] == "relaycore_recommendations" and r.json()["flow_run_id"]
    assert [s["id"] for s in r.json()["steps"]] == ["fetch_vehicles", "build_prompts", "predict_answers",
                                                  "parse_recommendations", "send_recommendations"]
    (name, _, spec), = fake_trigger
    assert name == "relaycore_recommendations"
    assert spec["endpoint_id"] == endpoint_id and spec["limit"] == 3 and spec["service_interval_miles"] == 5000
