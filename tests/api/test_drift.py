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
    only if the promotion gate passed, onto the alert's endpoint with a canary share. Workflow outcomes are
    set by hand; the chain's decisions are real."""
    from weft.db import session_scope
    from weft.monitoring import retrain
    from weft.tables import Adapter, DriftAlert, Endpoint, Evaluation, Model, Workflow

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

    with session_scope() as s:
        endpoint_name = s.get(Endpoint, world["endpoints"][2]).name
    for promoted in (False, True):
        alert_id, model_id = finished_retrain()
        entry = advance(alert_id)
        assert entry["step"] == "evaluate" and entry["decision"] == "started" and entry["model_id"] == model_id
        assert fake_trigger[-1][0] == "evaluate_model" and fake_trigger[-1][2]["dataset_id"] == world["dataset_id"]
        assert advance(alert_id) is None  # the evaluation is still running: nothing to decide
        evaluated(alert_id, promoted)
        entry = advance(alert_id)
        assert entry["step"] == "deploy"
        if promoted:  # a new revision of the alert's own endpoint, with the canary share
            assert entry["decision"] == "started" and fake_trigger[-1][0] == "deploy_model"
            spec = fake_trigger[-1][2]
            assert spec["model_id"] == model_id
            assert spec["endpoint_name"] == endpoint_name and entry["endpoint_name"] == endpoint_name
            assert spec["traffic_percent"] == entry["traffic_percent"] == 10
            assert advance(alert_id) is None  # the deploy is still running: no canary to watch yet
        else:
            assert entry["decision"] == "skipped: not promoted" and "lower bound -0.05" in entry["reason"]
            assert fake_trigger[-1][0] == "evaluate_model"  # no deploy was started


# ---------------------------------------------------------------- the canary after the redeploy

@pytest.fixture
def canary_chain(world):
    """A factory: a fresh endpoint serving v1 (90 %) and the retrain's v2 (10 %) since `minutes_ago`, and an
    alert whose chain deployed v2 (its deploy workflow COMPLETED, set by hand)."""
    from weft.db import session_scope
    from weft.tables import DriftAlert, Endpoint, Revision, Workflow

    def make(minutes_ago: float) -> dict:
        since = datetime.now(UTC) - timedelta(minutes=minutes_ago)
        with session_scope() as s:
            endpoint = Endpoint(user_id=world["user_id"], model_id=world["tuned_id"], status="active",
                                name=f"auto-canary-{uuid.uuid4().hex[:6]}")
            deploy = Workflow(user_id=world["user_id"], workflow_type="deploy_model", total_steps=3,
                              status="COMPLETED")
            v1, v2 = (Revision(endpoint_id=endpoint.id, number=n, model_id=world["tuned_id"], status="active",
                               traffic=share, replicas=1, traffic_changed_at=since,
                               workflow_id=deploy.id if n == 2 else None) for n, share in ((1, 90), (2, 10)))
            alert = DriftAlert(user_id=world["user_id"], endpoint_id=endpoint.id, severity="high", type="data_drift",
                               description="shifted", decisions=[
                                   {"step": "retrain", "decision": "started", "workflow_id": "ft"},
                                   {"step": "evaluate", "decision": "started", "workflow_id": "ev"},
                                   {"step": "deploy", "decision": "started", "workflow_id": deploy.id}])
            s.add_all([endpoint, deploy, v1, v2, alert])
        return {"alert_id": alert.id, "endpoint_id": endpoint.id, "v1": v1.id, "v2": v2.id, "since": since}

    return make


def serve(chain: dict, revision: str, n: int, *, latency_ms: float, errors: int = 0) -> None:
    """`n` gateway records of one revision since the canary started, the first `errors` of them 503s."""
    from weft.db import session_scope
    from weft.tables import InferenceRecord

    with session_scope() as s:
        for i in range(n):
            s.add(InferenceRecord(endpoint_id=chain["endpoint_id"], revision_id=chain[revision],
                                  route="/v1/chat/completions", latency_ms=latency_ms + i % 5,
                                  status_code=503 if i < errors else 200,
                                  created_at=chain["since"] + timedelta(milliseconds=10 * i)))


def step(chain: dict) -> dict | None:
    from weft.db import session_scope
    from weft.monitoring import retrain
    from weft.tables import DriftAlert

    with session_scope() as s:
        return retrain.advance(s, s.get(DriftAlert, chain["alert_id"]))


def split_of(chain: dict) -> dict[str, int]:
    from weft.db import session_scope
    from weft.serving.revisions import revisions

    with session_scope() as s:
        return {r.version: r.traffic for r in revisions(s, chain["endpoint_id"])}


def events_of(chain: dict) -> dict[str, dict]:
    from weft.db import session_scope
    from weft.tables import Event

    with session_scope() as s:
        return {e.type: e.data for e in s.exec(select(Event).where(Event.key.contains(chain["endpoint_id"])))}


def test_healthy_canary_is_promoted_after_its_window(world, canary_chain, monkeypatch):
    from weft.db import session_scope
    from weft.monitoring import retrain
    from weft.tables import DriftAlert, Endpoint

    monkeypatch.setenv("WEFT_RETRAIN_CANARY_MINUTES", "5")
    chain = canary_chain(minutes_ago=11)
    serve(chain, "v1", 300, latency_ms=100)
    serve(chain, "v2", 40, latency_ms=104)
    watching = step(chain)
    assert watching["step"] == "canary" and watching["decision"] == "watching"
    assert watching["revision"] == "v2" and watching["baseline"] == {"v1": 90} and watching["share"] == 10
    with session_scope() as s:  # the controller's sweep and the drift monitor advance every open chain
        moved = {e["alert_id"]: e for e in retrain.advance_open_chains(s)}
    entry = moved[chain["alert_id"]]
    assert entry["decision"] == "promoted", entry
    assert entry["canary_stats"]["requests"] == 40 and entry["canary_stats"]["errors"] == 0
    assert entry["baseline_stats"]["requests"] == 300 and entry["traffic"] == {"v2": 100}
    assert split_of(chain) == {"v1": 0, "v2": 100}
    with session_scope() as s:
        assert s.get(Endpoint, chain["endpoint_id"]).status == "updating"
        alert = s.get(DriftAlert, chain["alert_id"])
        assert [d["decision"] for d in alert.decisions if d["step"] == "canary"] == ["watching", "promoted"]
        assert alert not in retrain.open_chains(s)
    assert events_of(chain)["deployment.updated"]["traffic"] == {"v2": 100}
    assert step(chain) is None  # the chain has ended


def test_failing_canary_is_rolled_back_before_its_window_ends(world, canary_chain):
    chain = canary_chain(minutes_ago=1)  # the default 30-minute window is far from over
    serve(chain, "v1", 200, latency_ms=100, errors=1)
    serve(chain, "v2", 40, latency_ms=100, errors=10)
    assert step(chain)["decision"] == "watching"
    entry = step(chain)
    assert entry["decision"] == "rolled back" and "10 of 40" in entry["reason"], entry
    assert split_of(chain) == {"v1": 100, "v2": 0}
    event = events_of(chain)["deployment.rolled_back"]
    assert event["version"] == "v1" and event["from_version"] == "v2"


def test_slower_canary_is_rolled_back_and_a_quiet_one_promoted_after_one_extension(world, canary_chain,
                                                                                  monkeypatch):
    monkeypatch.setenv("WEFT_RETRAIN_CANARY_MINUTES", "5")
    slow = canary_chain(minutes_ago=11)
    serve(slow, "v1", 200, latency_ms=100)
    serve(slow, "v2", 40, latency_ms=400)
    assert step(slow)["decision"] == "watching"
    entry = step(slow)
    assert entry["decision"] == "rolled back" and "too slow" in entry["reason"], entry
    assert entry["canary_stats"]["p50_ms"] > 3 * entry["baseline_stats"]["p50_ms"]
    assert split_of(slow) == {"v1": 100, "v2": 0}

    quiet = canary_chain(minutes_ago=11)  # 5 + 5 minutes are over by the second look
    serve(quiet, "v1", 200, latency_ms=100)
    serve(quiet, "v2", 3, latency_ms=100)
    assert step(quiet)["decision"] == "watching"
    extended = step(quiet)
    assert extended["decision"] == "extended" and "only 3 canary requests" in extended["reason"]
    entry = step(quiet)
    assert entry["decision"] == "promoted" and "none failed" in entry["reason"], entry
    assert split_of(quiet) == {"v1": 0, "v2": 100}


def test_canary_leaves_a_split_changed_by_hand_and_acts_once_under_concurrent_advances(world, canary_chain):
    from weft.db import session_scope
    from weft.monitoring import retrain
    from weft.serving.revisions import set_traffic
    from weft.tables import DriftAlert, Endpoint

    chain = canary_chain(minutes_ago=1)
    with session_scope() as s1, session_scope() as s2:  # two processes read the alert, one acts
        first, second = s1.get(DriftAlert, chain["alert_id"]), s2.get(DriftAlert, chain["alert_id"])
        assert second.decisions == first.decisions
        assert retrain.advance(s1, first)["decision"] == "watching"
        assert retrain.advance(s2, second) is None
    with session_scope() as s:
        set_traffic(s, s.get(Endpoint, chain["endpoint_id"]), {"v1": 100}, "rolled back by hand")
    entry = step(chain)
    assert entry["decision"] == "skipped: traffic changed" and entry["traffic"] == {"v1": 100}
    assert split_of(chain) == {"v1": 100, "v2": 0}
    with session_scope() as s:
        decisions = [d["decision"] for d in s.get(DriftAlert, chain["alert_id"]).decisions if d["step"] == "canary"]
    assert decisions == ["watching", "skipped: traffic changed"]
