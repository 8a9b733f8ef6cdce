"""End to end on the real stack: a tiny model deployed behind an endpoint writes service recommendations
for the RelayCore stand-in's vehicles (the relaycore_recommendations flow on the `cpu-light` worker,
predictions through the gateway), and the stand-in receives them; a vehicle RelayCore refuses is recorded
in the run's logs while the others are sent; when every vehicle fails, the run fails."""

from __future__ import annotations

import time

import pytest
from sqlmodel import select

from tests.helpers.e2e import onboard_from_disk, post_sequence, register, wait_status
from tests.helpers.relaycore import VEHICLES, RelayCoreStandIn
from weft.db import session_scope
from weft.integrations.recommendations import build_prompt, parse_answer
from weft.integrations.relaycore import Vehicle
from weft.tables import InferenceRecord

pytestmark = pytest.mark.e2e
DEPLOY = "/api/v1/models/deploy-workflow"
RELAYCORE = "/api/v1/integrations/relaycore"
CHAT_TEMPLATE_ID = "7a2c1e00-0000-4000-8000-000000000001"
KEY = "rc_e2e_key_0123456789"
REFUSED = {**VEHICLES[0], "id": "veh_refused", "vin": "2T1BURHE0JC000000", "make": "Toyota", "model": "Corolla"}
CONCERN = "Strange noise when braking"
MAX_TOKENS = 24  # the tiny model's context is 256 tokens; a prompt is ~176


@pytest.fixture(scope="module")
def dana(api) -> dict[str, str]:
    return register(api, "dana")


@pytest.fixture(scope="module")
def relaycore():
    with RelayCoreStandIn(KEY, vehicles=[*VEHICLES, REFUSED], refuse_vins={REFUSED["vin"]}) as server:
        yield server


@pytest.fixture(scope="module")
def endpoint(api, dana, tiny_model_dir) -> dict:
    """The tiny model onboarded from disk and deployed (one replica, one sequence at a time)."""
    model_id = onboard_from_disk(api, dana, tiny_model_dir, "tiny relaycore")
    steps = [{"workflow_total_steps": 5, "step_number": 1, "model_id": model_id, "project_id": "p1"},
             {"step_number": 2, "template_id": CHAT_TEMPLATE_ID},
             {"step_number": 3, "endpoint_name": "tiny-relaycore", "deploy_config": {
                 "concurrent_requests": 1, "avg_sequence_length": 16, "avg_context_length": 64,
                 "per_session_tokens_per_sec": [1, 100], "ttft": [50, 1000], "e2e_latency": [100, 100000]}},
             {"step_number": 5, "trigger_workflow": True}]
    body = post_sequence(api, dana, DEPLOY, steps)
    assert wait_status(api, dana, body["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    return next(e for e in api.get("/api/v1/endpoints", headers=dana).json()["data"] if e["name"] == "tiny-relaycore")


def start(api, headers, endpoint_id: str) -> dict:
    r = api.post(f"{RELAYCORE}/recommendations-workflow", headers=headers, json={
        "workflow_total_steps": 1, "step_number": 1, "trigger_workflow": True, "endpoint_id": endpoint_id,
        "limit": 10, "customer_concern": CONCERN, "max_tokens": MAX_TOKENS, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def run_logs(stack, flow_run_id: str, needle: str, timeout: float = 15) -> list[str]:
    """The run's log messages once one contains `needle` (logs reach the server a little late)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings({PREFECT_API_URL: stack.settings.prefect_api}), get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            messages = [log.message for log in logs]
            if any(needle in m for m in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.5)


def test_recommendations_from_a_deployed_model_reach_relaycore(api, stack, dana, endpoint, relaycore):
    r = api.put(RELAYCORE, headers=dana, json={"base_url": relaycore.base_url, "api_key": KEY})
    assert r.status_code == 200, r.text
    started = start(api, dana, endpoint["id"])
    view = wait_status(api, dana, started["workflow_id"], {"COMPLETED", "FAILED"}, timeout=180)
    assert view["status"] == "COMPLETED", view
    assert all(s["status"] == "completed" for s in view["steps"]), view["steps"]

    # the three vehicles RelayCore knows got recommendations; the refused one is in the run's logs
    assert sorted(b["vin"] for b in relaycore.received) == sorted(v["vin"] for v in VEHICLES)
    logs = run_logs(stack, view["flow_run_id"], REFUSED["vin"])
    assert any(REFUSED["vin"] in m and "send_recommendations failed" in m for m in logs), logs
    assert sum("recommendations sent" in m for m in logs) == len(VEHICLES)

    # every prompt went through the gateway (recorded like any request), in document 000's format
    vehicles = {v["vin"]: Vehicle.model_validate(v) for v in [*VEHICLES, REFUSED]}
    with session_scope() as s:
        prompts = {r.prompt for r in s.exec(select(InferenceRecord).where(
            InferenceRecord.endpoint_id == endpoint["id"], InferenceRecord.status_code == 200))}
    assert {build_prompt(v, CONCERN) for v in vehicles.values()} <= prompts

    # the descriptions are the model's own words: one sequence at a time and greedy, so asking again
    # gives the same answer, and parsing it gives what RelayCore received
    for batch in relaycore.received:
        vehicle = vehicles[batch["vin"]]
        again = api.post(f"/endpoints/{endpoint['slug']}/v1/completions", headers=dana, json={
            "prompt": build_prompt(vehicle, CONCERN), "max_tokens": MAX_TOKENS, "temperature": 0})
        assert again.status_code == 200, again.text
        expected = parse_answer(again.json()["choices"][0]["text"], vehicle)
        assert [r["description"] for r in batch["recommendations"]] == [r.description for r in expected]
        for rec in batch["recommendations"]:
            assert rec["priority"] in {"low", "medium", "high"} and rec["due_date"].endswith("T00:00:00Z")
            assert rec["details"]["current_mileage"] == vehicle.mileage

    # when RelayCore refuses every vehicle, nothing was sent and the run fails, saying why
    relaycore.refuse_vins |= set(vehicles)
    failed = wait_status(api, dana, start(api, dana, endpoint["id"])["workflow_id"], {"COMPLETED", "FAILED"},
                         timeout=180)
    assert failed["status"] == "FAILED" and "no vehicle's recommendations were sent" in (failed["reason"] or ""), failed
    assert len(relaycore.received) == len(VEHICLES)
