"""Drift monitoring: the evidently checks, the drift_monitor flow's alerts and reports, the retrain policy
(cooldown, approval) with its decisions, and the drift-alert API."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from weft.monitoring.drift import DriftThresholds, detect_drift, latency_drift, text_descriptors, vocabulary

PARTS = ["oil", "brakes", "tires", "battery", "timing belt", "spark plugs", "coolant", "transmission fluid", "wipers"]
CARS = ["sedan", "truck", "hatchback", "SUV", "minivan"]
TEMPLATES = ["How often should I check the {} on my {}?", "When do I replace the {} of a {}?",
             "Why is the {} of my {} noisy?", "What does a {} service cost for a {}?"]
DISHES = ["lentil stew", "sourdough bread", "mushroom risotto", "green curry", "apple pie"]
SPICES = ["garlic", "onion", "cumin", "paprika", "basil", "thyme", "rosemary", "ginger", "chili", "saffron"]


def automotive(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(rng.choice(PARTS), rng.choice(CARS))


def cooking(rng: random.Random) -> str:
    return (f"Could you write me a long and detailed recipe for {rng.choice(DISHES)} with "
            f"{', '.join(rng.sample(SPICES, 5))}, explaining every step, the timing, and which wine pairs well "
            "with it at a dinner party for eight guests?")


# ---------------------------------------------------------------- the pure checks

def test_descriptors_measure_length_words_and_oov():
    df = text_descriptors(["check the oil", "bake sourdough bread"], vocabulary(["check the oil now"]))
    assert list(df["word_count"]) == [3, 3]
    assert list(df["oov_share"]) == [0, 1]
    assert df["unigram_perplexity"][1] > df["unigram_perplexity"][0]


def test_small_windows_get_no_verdict_and_tiny_vocabularies_skip_text_drift():
    rng = random.Random(0)
    few = detect_drift([automotive(rng) for _ in range(100)], [automotive(rng) for _ in range(10)])
    assert few.severity is None and "no verdict" in few.reason
    tiny = detect_drift(["a b"] * 30, ["a b"] * 60, thresholds=DriftThresholds(), html=False)
    assert tiny.severity == "none" and "text-content drift skipped" in tiny.text_drift_note


def test_latency_drift_against_the_previous_week():
    slow = latency_drift([100.0 + i % 20 for i in range(300)], [400.0 + i % 40 for i in range(60)])
    assert slow.severity == "high" and slow.p_value < 1e-6 and slow.p95_ratio > 3
    same = latency_drift([100.0 + i % 20 for i in range(300)], [100.0 + i % 20 for i in range(60)])
    assert same.severity == "none"


# ---------------------------------------------------------------- the flow, the policy and the API

@pytest.fixture(scope="module")
def world(prefect_server, db, client, session_dir):
    """An API user owning a base model, the automotive fine-tune dataset, an adapter model and three active
    endpoints serving it (shifted traffic, unshifted traffic, a hand-made alert for the approval test)."""
    from weft.db import session_scope
    from weft.tables import Adapter, Endpoint, Model, User
    from weft.testing.registry import register_dataset

    username = f"d{uuid.uuid4().hex[:10]}"
    r = client.post("/api/v1/auth/register", json={"email": f"{username}@example.com", "username": username,
                                                     "password": "long-enough-pw"})
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    rng = random.Random(7)
    records = [{"prompt": automotive(rng), "completion": "See the maintenance schedule."} for _ in range(240)]
    with session_scope() as s:
        user_id = s.exec(select(User).where(User.username == username)).one().id
    dataset_id = register_dataset(user_id, "automotive-qa", records)
    with session_scope() as s:
        base = Model(user_id=user_id, name="tiny base", provider_type="disk", storage_uri="file:///nowhere/base")
        adapter = Adapter(user_id=user_id, name="auto-qa", base_model_id=base.id, dataset_id=dataset_id,
                          method="lora", config={"max_steps": 5, "validation_split": 0.1}, storage_key="adapters/x")
        tuned = Model(user_id=user_id, name="auto-qa", type="fine-tuned", provider_type="adapter",
                      storage_uri="file:///nowhere/tuned", details={"adapter_id": adapter.id, "base_model_id": base.id})
        adapter.model_id = tuned.id
        endpoints = [Endpoint(user_id=user_id, model_id=tuned.id, name=f"auto-{k}-{uuid.uuid4().hex[:6]}",
                              status="active") for k in ("shifted", "steady", "manual")]
        s.add_all([base, adapter, tuned, *endpoints])
    return {"user_id": user_id, "headers": headers, "tuned_id": tuned.id, "dataset_id": dataset_id,
            "endpoints": [e.id for e in endpoints]}


def record_traffic(endpoint_id: str, prompts: list[str], *, hours_ago: float, latency_ms: float) -> None:
    from weft.db import session_scope
    from weft.tables import InferenceRecord

    now = datetime.now(UTC)
    with session_scope() as s:
        for i, prompt in enumerate(prompts):
            s.add(InferenceRecord(endpoint_id=endpoint_id, route="/v1/chat/completions", latency_ms=latency_ms + i % 7,
                                  tokens_in=len(prompt.split()), status_code=200, prompt=prompt,
                                  created_at=now - timedelta(hours=hours_ago, minutes=i % 50)))


def alerts_of(endpoint_id: str):
    from weft.db import session_scope
    from weft.tables import DriftAlert

    with session_scope() as s:
        return list(s.exec(select(DriftAlert).where(DriftAlert.endpoint_id == endpoint_id)
                           .order_by(DriftAlert.detected_at)))


def test_shifted_traffic_raises_a_high_alert_starts_a_retrain_then_cools_down(world, client, fake_trigger,
                                                                                auth_headers):
    from flows.drift_monitor import drift_monitor
    from weft.db import session_scope
    from weft.storage import get_storage
    from weft.tables import Workflow, WorkflowStep

    endpoint = world["endpoints"][0]
    rng = random.Random(11)
    record_traffic(endpoint, [automotive(rng) for _ in range(120)], hours_ago=24 * 4, latency_ms=100)  # last week
    record_traffic(endpoint, [cooking(rng) for _ in range(80)], hours_ago=1, latency_ms=450)  # now: other topic, slow

    summary = drift_monitor(window_hours=6, min_prompts=50, endpoint_id=endpoint)
    assert summary[0]["data_drift"] == "high", summary
    assert summary[0]["reference"].startswith("fine-tune dataset")
    data_alert = next(a for a in alerts_of(endpoint) if a.type == "data_drift")
    assert data_alert.severity == "high" and data_alert.status == "open"
    assert all(p < 0.001 for p in data_alert.metrics["p_values"].values())
    assert set(data_alert.metrics["p_values"]) == {"length", "word_count", "oov_share", "unigram_perplexity"}
    assert data_alert.metrics["text_drift_score"] is not None
    assert get_storage().read_bytes(data_alert.report_key).lstrip().startswith(b"<!DOCTYPE html>")
    perf = next(a for a in alerts_of(endpoint) if a.type == "performance_drift")
    assert perf.severity == "high" and perf.metrics["p95_ratio"] > 3
    from weft.tables import Event

    with session_scope() as s:  # webhook events: the alert, and what the traffic recommends
        events = s.exec(select(Event).where(Event.user_id == world["user_id"])).all()
    assert any(e.type == "drift.detected" and e.key == f"drift:{data_alert.id}" for e in events)
    assert isinstance(summary[0]["recommendations"], list)  # their events: test_monitoring_metrics

    # the retrain decision, and the real fine_tune workflow it created (steps validated and stored)
    started = [d for d in data_alert.decisions if d["step"] == "retrain"]
    assert [d["decision"] for d in started] == ["started"] and "no labels" in started[0]["reason"]
    assert fake_trigger[0][0] == "fine_tune"
    assert fake_trigger[0][2]["dataset_id"] == world["dataset_id"]
    with session_scope() as s:
        wf = s.get(Workflow, started[0]["workflow_id"])
        assert wf.workflow_type == "fine_tune" and wf.flow_run_id and wf.user_id == world["user_id"]
        assert len(s.exec(select(WorkflowStep).where(WorkflowStep.workflow_id == wf.id)).all()) == 2

    # the API lists it (document 000 shape), serves its report, and only to its owner
    h = world["headers"]
    page = client.get("/api/v1/monitoring/drift-alerts", headers=h,
                      params={"severity": "high", "model_id": world["tuned_id"], "type": "data_drift"}).json()
    assert page["meta"]["limit"] == 20 and any(a["id"] == data_alert.id for a in page["data"])
    assert client.get(f"/api/v1/monitoring/drift-alerts/{data_alert.id}/report", headers=h).status_code == 200
    stranger = auth_headers()
    assert client.patch(f"/api/v1/monitoring/drift-alerts/{data_alert.id}", headers=stranger,
                        json={"status": "acknowledged"}).status_code == 404
    assert client.get("/api/v1/monitoring/drift-alerts", headers=stranger).json()["meta"]["total"] == 0
    assert client.get("/api/v1/monitoring/drift-alerts?status=bogus", headers=h).status_code == 422

    # a second run in the same window: the open alert is not duplicated
    drift_monitor(window_hours=6, min_prompts=50, endpoint_id=endpoint)
    assert len([a for a in alerts_of(endpoint) if a.type == "data_drift"]) == 1

    # acknowledged, the drift is reported again: a new high alert, but the retrain is in its cooldown
    r = client.patch(f"/api/v1/monitoring/drift-alerts/{data_alert.id}", headers=h, json={"status": "acknowledged"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    drift_monitor(window_hours=6, min_prompts=50, endpoint_id=endpoint)
    second = [a for a in alerts_of(endpoint) if a.type == "data_drift"][-1]
    assert second.id != data_alert.id and second.severity == "high"
    assert [d["decision"] for d in second.decisions] == ["skipped: cooldown"]
    assert len(fake_trigger) == 1


def test_unshifted_traffic_raises_no_alert(world):
    from flows.drift_monitor import drift_monitor

    endpoint = world["endpoints"][1]
    rng = random.Random(3)
    record_traffic(endpoint, [automotive(rng) for _ in range(80)], hours_ago=1, latency_ms=100)
    summary = drift_monitor(window_hours=6, min_prompts=50, endpoint_id=endpoint)
    assert summary[0]["data_drift"] == "none", summary
    assert alerts_of(endpoint) == []


def test_approval_switch_waits_for_the_patch(world, client, fake_trigger, monkeypatch):
    from weft.db import session_scope
    from weft.monitoring import retrain
    from weft.tables import DriftAlert

    monkeypatch.setenv("WEFT_RETRAIN_REQUIRES_APPROVAL", "true")
    endpoint = world["endpoints"][2]
    with session_scope() as s:
        alert = DriftAlert(user_id=world["user_id"], endpoint_id=endpoint, model_id=world["tuned_id"],
                           severity="high", type="data_drift", description="test")
        s.add(alert)
        s.flush()
        entry = retrain.apply_policy(s, alert)
    assert entry["decision"] == "skipped: awaiting approval" and not fake_trigger
    r = client.patch(f"/api/v1/monitoring/drift-alerts/{alert.id}", headers=world["headers"],
                     json={"approve_retrain": True})
    assert r.status_code == 200, r.text
    decisions = [d["decision"] for d in r.json()["decisions"]]
    assert decisions == ["skipped: awaiting approval", "approved", "started"]
    assert fake_trigger and fake_trigger[0][0] == "fine_tune"


def test_retrain_chain_evaluates_then_redeploys_only_when_promoted(world, fake_trigger):
    """After the retrain's fine_tune completes: evaluate_model on its model; after the evaluation: deploy
    only if the promotion gate passed. Workflow outcomes are set by hand; the chain's decisions are real."""
    from weft.db import session_scope
    from weft.monitoring import retrain
    from weft.tables import Adapter, DriftAlert, Evaluation, Model, Workflow

    def finished_retrain() -> tuple[str, str]:
        with session_scope() as s:
            ft = Workflow(user_id=world["user_id"], workflow_type="fine_tune", total_steps=2, status="COMPLETED")
            model = Model(user_id=world["user_id"], name=f"auto-qa-{uuid.uuid4().hex[:6]}", type="fine-tuned",
                          provider_type="adapter", storage_uri="file:///nowhere/retrained",
                          scan={"status": "SAFE", "total_issues": 0}, scan_verified=True)
            adapter = Adapter(user_id=world["user_id"], name=model.name, base_model_id=world["tuned_id"],
                              dataset_id=world["dataset_id"], method="lora", config={"validation_split": 0.1},
                              storage_key="adapters/retrained", workflow_id=ft.id, model_id=model.id)
            model.details = {"adapter_id": adapter.id}
            alert = DriftAlert(user_id=world["user_id"], endpoint_id=world["endpoints"][2], severity="high",
                               type="data_drift", description="shifted",
                               decisions=[{"step": "retrain", "decision": "started", "workflow_id": ft.id}])
            s.add_all([ft, model, adapter, alert])
            return alert.id, model.id

    def advance(alert_id: str) -> dict:
        with session_scope() as s:
            return retrain.advance(s, s.get(DriftAlert, alert_id))

    def evaluated(alert_id: str, promoted: bool) -> None:
        with session_scope() as s:
            entry = next(d for d in s.get(DriftAlert, alert_id).decisions if d["step"] == "evaluate")
            wf = s.get(Workflow, entry["workflow_id"])
            wf.status = "COMPLETED"
            s.add(wf)
            s.add(Evaluation(id=wf.id, user_id=world["user_id"], model_id=entry["model_id"], status="completed",
                             promoted=promoted, gate={"reason": "lower bound +0.20" if promoted else "lower bound -0.05"}))

    for promoted in (False, True):
        alert_id, model_id = finished_retrain()
        entry = advance(alert_id)
        assert entry["step"] == "evaluate" and entry["decision"] == "started" and entry["model_id"] == model_id
        assert fake_trigger[-1][0] == "evaluate_model" and fake_trigger[-1][2]["dataset_id"] == world["dataset_id"]
        assert advance(alert_id) is None  # the evaluation is still running: nothing to decide
        evaluated(alert_id, promoted)
        entry = advance(alert_id)
        assert entry["step"] == "deploy"
        if promoted:
            assert entry["decision"] == "started" and fake_trigger[-1][0] == "deploy_model"
            assert fake_trigger[-1][2]["model_id"] == model_id
        else:
            assert entry["decision"] == "skipped: not promoted" and "lower bound -0.05" in entry["reason"]
            assert fake_trigger[-1][0] == "evaluate_model"  # no deploy was started
