"""The serving control plane on the real stack (issue 14), one stack for the module:

- revisions: v1 with 2 replicas, v2 onto the same endpoint at 50 %, both serve, rollback to v1, v2's
  replicas drain away; PATCH bounds (a 422 naming both fields for min > max, a scale-down for a lower max);
- a SIGKILLed replica server is replaced while a steady stream of requests loses at most the one in flight;
- autoscaling (min 1, max 3, target 1): 6 concurrent clients bring replicas above 1, and after the load
  stops they return to 1 once the stable window has passed;
- `min_instances: 0`: idle, the endpoint has no replica; the next request is held through a cold start,
  succeeds, and document 001's `cold_starts` counts it (and nothing else);
- the retrain chain: a promoted model is deployed as a 10 % canary revision of the alert's endpoint,
  watched against v1 by the controller's sweep, then routed 100 %.

The windows are short here (STACK_SETTINGS) so the module stays within a few minutes; `-s` prints timings."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlmodel import select

from tests.e2e.test_serving_e2e import last_record_id, server_pid, wait_records
from tests.helpers.e2e import onboard_from_disk, register, wait_status
from weft.db import session_scope
from weft.tables import InferenceRecord

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]  # a first test also pays for the stack and a deploy

STABLE_SECONDS = 12.0  # the autoscaler's stable window here (60 s by default)
STACK_SETTINGS = {  # for the `stack` fixture
    "revision_drain_seconds": 5, "replica_drain_seconds": 1,
    "autoscale_stable_seconds": STABLE_SECONDS, "autoscale_panic_seconds": 3,
    "rate_limit_per_minute": 1_000_000,  # the load tests send thousands of requests a minute
}
T0 = time.monotonic()


def timing(what: str, since: float) -> float:
    took = time.monotonic() - since
    print(f"[control plane +{time.monotonic() - T0:6.1f} s] {what}: {took:.1f} s")
    return took


@pytest.fixture(scope="module")
def dave(api) -> dict[str, str]:
    return register(api, "dave")


@pytest.fixture(scope="module")
def model_id(api, dave, tiny_model_dir) -> str:
    """The tiny model, onboarded once for every endpoint of the module."""
    t = time.monotonic()
    model_id = onboard_from_disk(api, dave, tiny_model_dir, "tiny control")
    timing("onboard the tiny model", t)
    return model_id


@pytest.fixture(scope="module")
def api_key(api, dave) -> dict[str, str]:
    key = api.post("/api/v1/auth/api-keys", headers=dave, json={"name": "cp"}).json()["key"]
    return {"Authorization": f"Bearer {key}"}


def deploy(api, headers, model_id, **body) -> dict:
    t = time.monotonic()
    r = api.post(f"/api/v1/models/{model_id}/deploy", headers=headers, json=body)
    assert r.status_code == 202, r.text
    assert wait_status(api, headers, r.json()["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] \
        == "COMPLETED"
    timing(f"deploy {body.get('endpoint_name')} {r.json()['version']}", t)
    return r.json()


def view(api, headers, endpoint_id) -> dict:
    return api.get(f"/api/v1/endpoints/{endpoint_id}", headers=headers).json()


def live_workers(api, headers, endpoint_id) -> list[dict]:
    return [w for w in view(api, headers, endpoint_id)["workers"] if w["state"] in ("starting", "healthy", "draining")]


def healthy_workers(api, headers, endpoint_id) -> list[dict]:
    return [w for w in view(api, headers, endpoint_id)["workers"] if w["state"] == "healthy"]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """`check()`'s first truthy value, polled; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)


class Load:
    """`clients` threads, each sending completions one after another until `stop()`; every answer's
    status and seconds are kept."""

    def __init__(self, base_url: str, headers: dict[str, str], body: dict, clients: int = 1) -> None:
        self.base_url, self.headers, self.body = base_url, headers, body
        self.results: list[tuple[int, float]] = []
        self.lock, self.done = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=120) as http:
            while not self.done.is_set():
                t = time.monotonic()
                try:
                    status = http.post("/v1/completions", json=self.body).status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    self.results.append((status, time.monotonic() - t))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=150)

    @property
    def failures(self) -> dict[int, int]:
        """Count of each non-200 status (0: no answer)."""
        with self.lock:
            return dict(Counter(s for s, _ in self.results if s != 200))

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.results)


def records_since(endpoint_id: str, since: int) -> list[InferenceRecord]:
    with session_scope() as s:
        return list(s.exec(select(InferenceRecord).where(InferenceRecord.endpoint_id == endpoint_id,
                                                         InferenceRecord.id > since)))


def test_revisions_split_rollback_and_bounds(api, dave, model_id, api_key):
    v1 = deploy(api, dave, model_id, endpoint_name="Control Plane", instance_count=2)
    assert v1["version"] == "v1" and v1["model"] == "control-plane"
    endpoint_id = v1["id"]
    assert len(live_workers(api, dave, endpoint_id)) == 2
    shown = view(api, dave, endpoint_id)  # the engine the replicas run and the batch they report on /health
    assert (shown["engine"], shown["max_batch"]) == ("transformers", 16)
    assert {w["max_concurrency"] for w in shown["workers"] if w["state"] == "healthy"} == {16}

    t = time.monotonic()
    r = api.post(f"/api/v1/models/{model_id}/deploy", headers=dave, json={"endpoint_name": "Control Plane",
                                                                           "instance_count": 1, "traffic_percent": 50})
    assert r.status_code == 202 and r.json()["id"] == endpoint_id and r.json()["version"] == "v2", r.text
    assert wait_status(api, dave, r.json()["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    timing("deploy Control Plane v2 at 50 %", t)
    versions = {v["version"]: v for v in api.get(f"/api/v1/deployments/{endpoint_id}/versions",
                                                 headers=dave).json()["versions"]}
    assert versions["v1"]["traffic_percent"] == versions["v2"]["traffic_percent"] == 50

    body = {"model": "control-plane", "prompt": "check the oil", "max_tokens": 2, "temperature": 0}
    since = last_record_id()
    for _ in range(40):
        assert api.post("/v1/completions", headers=api_key, json=body).status_code == 200
    wait_records(endpoint_id, since, 40)
    assert {r.revision_id for r in records_since(endpoint_id, since)} == {versions["v1"]["id"], versions["v2"]["id"]}

    r = api.post(f"/api/v1/deployments/{endpoint_id}/rollback", headers=dave, json={"version": "v1"})
    assert r.status_code == 200, r.text
    since = last_record_id()
    for _ in range(10):
        assert api.post("/v1/completions", headers=api_key, json=body).status_code == 200
    wait_records(endpoint_id, since, 10)
    assert {r.revision_id for r in records_since(endpoint_id, since)} == {versions["v1"]["id"]}
    t = time.monotonic()  # the drain period (5 s here), then v2's replica stops
    wait_for(lambda: not any(w["revision_id"] == versions["v2"]["id"] for w in live_workers(api, dave, endpoint_id)),
             60, "v2's replica drains and stops")
    timing("rollback: v2's replica gone", t)

    bad = api.patch(f"/api/v1/deployments/{endpoint_id}", headers=dave, json={"min_instances": 3, "max_instances": 2})
    assert bad.status_code == 422, bad.text
    assert {e["field"] for e in bad.json()["error"]["details"]["errors"]} == {"min_instances", "max_instances"}
    t = time.monotonic()  # max_instances below the current count (2) scales down
    r = api.patch(f"/api/v1/deployments/{endpoint_id}", headers=dave, json={"min_instances": 1, "max_instances": 1})
    assert r.status_code == 200 and r.json()["status"] == "updating"
    wait_for(lambda: len(live_workers(api, dave, endpoint_id)) == 1
             and view(api, dave, endpoint_id)["status"] == "active", 60, "PATCH max_instances 1 scales down to 1")
    timing("PATCH max_instances 2 → 1: one replica left", t)
    assert any(e["action"] == "scaled" and "above max_instances 1" in e["reason"]
               for e in view(api, dave, endpoint_id)["events"])
    stopped = api.delete(f"/api/v1/endpoints/{endpoint_id}", headers=dave)  # frees the CPU for the tests below
    assert stopped.status_code == 200 and stopped.json()["status"] in ("stopping", "stopped"), stopped.text


@pytest.fixture(scope="module")
def elastic(api, dave, model_id) -> str:
    """An endpoint with 2 replicas to start with (min 2, max 3, one request in flight per replica as the
    autoscaling target); the tests below move its bounds with PATCH."""
    deployed = deploy(api, dave, model_id, endpoint_name="Elastic",
                      auto_scaling={"min_instances": 2, "max_instances": 3, "target_concurrency": 1})
    assert view(api, dave, deployed["id"])["target_concurrency"] == 1
    return deployed["id"]


def test_a_killed_replica_is_replaced_while_requests_keep_succeeding(api, dave, api_key, elastic, stack):
    workers = wait_for(lambda: (w := healthy_workers(api, dave, elastic)) and len(w) == 2 and w, 120, "2 healthy")
    before, victim = {w["id"] for w in workers}, workers[0]
    body = {"model": "elastic", "prompt": "check the oil level", "max_tokens": 8, "temperature": 0}
    with Load(stack.api_url, api_key, body) as stream:
        wait_for(lambda: stream.count >= 5, 30, "the stream is flowing")
        killed = time.monotonic()
        os.kill(server_pid(victim["url"]), signal.SIGKILL)

        def replaced() -> list[dict]:
            live = live_workers(api, dave, elastic)
            new = [w for w in live if w["id"] not in before and w["state"] == "healthy"]
            return new if len(live) == 2 and all(w["state"] == "healthy" for w in live) and new else []

        new = wait_for(replaced, 180, "the killed replica is replaced by a new healthy one")[0]
        took = timing("SIGKILL → the replacement is healthy", killed)
        since = last_record_id()
        wait_for(lambda: new["id"] in {r.replica_id for r in records_since(elastic, since)}, 60,
                 "the replacement serves requests of the stream")
    print(f"steady stream: {stream.count} requests, failed: {stream.failures}; replaced in {took:.1f} s")
    assert sum(stream.failures.values()) <= 1, stream.failures  # at most the one in flight when the server died
    events = view(api, dave, elastic)["events"]
    assert any(e["action"] == "replica_failed" and e["replica_id"] == victim["id"] for e in events), events
    assert any(e["action"] == "replica_started" and f"replacing {victim['id']}" in e["reason"] for e in events), events


def test_autoscale_up_under_load_and_back_after_the_stable_window(api, dave, api_key, elastic, stack):
    t = time.monotonic()
    r = api.patch(f"/api/v1/deployments/{elastic}", headers=dave, json={"min_instances": 1, "max_instances": 3})
    assert r.status_code == 200, r.text
    wait_for(lambda: len(live_workers(api, dave, elastic)) == 1, 60 + STABLE_SECONDS, "idle, down to min_instances 1")
    timing("PATCH min 2 → 1, idle: down to 1 replica", t)
    first = {w["id"] for w in healthy_workers(api, dave, elastic)}
    assert len(first) == 1

    body = {"model": "elastic", "prompt": "tell me a long story about the oil", "max_tokens": 64, "temperature": 0}
    since = last_record_id()
    loaded = time.monotonic()
    with Load(stack.api_url, api_key, body, clients=6) as load:
        wait_for(lambda: len(live_workers(api, dave, elastic)) > 1, 60, "the autoscaler adds replicas")
        timing("6 clients → a 2nd replica is wanted", loaded)
        grown = wait_for(lambda: [w for w in healthy_workers(api, dave, elastic) if w["id"] not in first], 240,
                         "a new replica is healthy")
        timing("6 clients → a new replica is healthy", loaded)
        wait_for(lambda: {w["id"] for w in grown} & {r.replica_id for r in records_since(elastic, since)}, 60,
                 "the new replica serves")
        peak = len(live_workers(api, dave, elastic))
        timing(f"6 clients → a new replica serves ({peak} replicas live)", loaded)
    rows = [r for r in records_since(elastic, since) if r.status_code == 200]
    mean_ms = 1000 * sum(seconds for _, seconds in load.results) / max(1, load.count)
    print(f"load: {load.count} requests, failed: {load.failures}, mean {mean_ms:.0f} ms, "
          f"mean tokens out {sum(r.tokens_out for r in rows) / max(1, len(rows)):.1f}")
    assert not load.failures, load.failures
    events = view(api, dave, elastic)["events"]
    assert any(e["action"] == "scaled" and "requests in flight over 3 s" in e["reason"] for e in events), events

    stopped = time.monotonic()
    wait_for(lambda: len(live_workers(api, dave, elastic)) == 1, 120 + STABLE_SECONDS, "back to 1 after the load")
    took = timing("load stopped → back to 1 replica", stopped)
    assert took >= STABLE_SECONDS * 0.5  # not before the stable window's load has fallen
    wait_for(lambda: view(api, dave, elastic)["status"] == "active", 30, "converged after the PATCH")


def test_scale_to_zero_then_a_cold_start_serves_the_next_request(api, dave, api_key, elastic, stack):
    t = time.monotonic()
    r = api.patch(f"/api/v1/deployments/{elastic}", headers=dave,
                  json={"min_instances": 0, "max_instances": 1, "timeout_seconds": 300})
    assert r.status_code == 200 and r.json()["configuration"]["timeout_seconds"] == 300, r.text
    wait_for(lambda: not live_workers(api, dave, elastic), 120 + 2 * STABLE_SECONDS, "idle: scaled to zero")
    timing("min_instances 0, idle → no replica", t)
    assert view(api, dave, elastic)["versions"][0]["desired_replicas"] == 0

    body = {"model": "elastic", "prompt": "wake up", "max_tokens": 4, "temperature": 0}
    t = time.monotonic()
    r = httpx.post(f"{stack.api_url}/v1/completions", headers=api_key, json=body, timeout=310)
    took = timing("cold start: request sent to zero replicas → 200", t)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] > 0
    assert len(healthy_workers(api, dave, elastic)) == 1
    events = view(api, dave, elastic)["events"]
    assert any(e["action"] == "replica_started" and "cold start" in e["reason"] for e in events), events
    metrics = api.get(f"/api/v1/metrics/{elastic}", headers=dave, params={"hours": 1, "resolution": "1m"}).json()
    assert metrics["metrics"]["cold_starts"] == 1, metrics["metrics"]  # not the deploy's, autoscaler's, replacement's
    print(f"cold start took {took:.1f} s")


RETRAIN_ENV = {  # the retrain chain's canary, watched briefly (the controller process reads these too)
    "WEFT_RETRAIN_CANARY_MINUTES": "0.3", "WEFT_RETRAIN_CANARY_MIN_REQUESTS": "3", "WEFT_RETRAIN_CHECK_SECONDS": "2",
    "WEFT_RETRAIN_CANARY_MAX_LATENCY_RATIO": "3",  # identical replicas on 2 busy cores: only a real slowdown counts
}


@pytest.fixture(scope="module", autouse=True)
def retrain_env():
    """Set before the module's stack starts (autouse fixtures come first), so its processes inherit it."""
    saved = {k: os.environ.get(k) for k in RETRAIN_ENV}
    os.environ.update(RETRAIN_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_retrain_chain_deploys_a_canary_revision_then_promotes_it(api, dave, model_id, api_key, stack):
    """A drift alert whose retrain was evaluated and promoted (those two workflows' outcomes are written
    here; fine-tuning is tested elsewhere): the chain deploys the model as a 10 % canary revision of the
    alert's endpoint for real, the controller's sweep watches it against v1, then routes it 100 %."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from weft.monitoring import retrain
    from weft.tables import DriftAlert, Evaluation, Workflow

    v1 = deploy(api, dave, model_id, endpoint_name="Retrained", instance_count=1)
    endpoint_id, user_id = v1["id"], api.get("/api/v1/auth/me", headers=dave).json()["id"]
    with session_scope() as s:
        finished = [Workflow(user_id=user_id, workflow_type=kind, total_steps=2, status="COMPLETED")
                    for kind in ("fine_tune", "evaluate_model")]
        s.add_all(finished)
        s.flush()
        s.add(Evaluation(id=finished[1].id, user_id=user_id, model_id=model_id, status="completed", promoted=True,
                         gate={"reason": "accuracy lower bound +0.20"}))
        alert = DriftAlert(user_id=user_id, endpoint_id=endpoint_id, model_id=model_id, severity="high",
                           type="data_drift", description="prompts shifted", decisions=[
                               {"step": "retrain", "decision": "started", "workflow_id": finished[0].id},
                               {"step": "evaluate", "decision": "started", "workflow_id": finished[1].id,
                                "model_id": model_id}])
        s.add(alert)
        alert_id = alert.id
    with temporary_settings({PREFECT_API_URL: stack.settings.prefect_api}), session_scope() as s:
        entry = retrain.advance(s, s.get(DriftAlert, alert_id))
    assert entry["step"] == "deploy" and entry["decision"] == "started", entry
    assert wait_status(api, dave, entry["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    split = {v["version"]: v["traffic_percent"]
             for v in api.get(f"/api/v1/deployments/{endpoint_id}/versions", headers=dave).json()["versions"]}
    assert split == {"v1": 90, "v2": 10}

    body = {"model": "retrained", "prompt": "check the oil", "max_tokens": 2, "temperature": 0}
    for _ in range(60):
        assert api.post("/v1/completions", headers=api_key, json=body).status_code == 200

    def canary_decision() -> dict | None:
        with session_scope() as s:
            decisions = s.get(DriftAlert, alert_id).decisions
        return next((d for d in decisions if d["step"] == "canary" and d["decision"] not in retrain.WATCHING), None)

    decided = wait_for(canary_decision, 180, "the canary verdict")
    assert decided["decision"] == "promoted", decided
    versions = {v["version"]: v for v in api.get(f"/api/v1/deployments/{endpoint_id}/versions",
                                                 headers=dave).json()["versions"]}
    assert versions["v2"]["traffic_percent"] == 100 and versions["v2"]["is_current"]
    assert api.post("/v1/completions", headers=api_key, json=body).status_code == 200
    assert api.delete(f"/api/v1/endpoints/{endpoint_id}", headers=dave).status_code == 200  # frees a core


def test_an_adapter_endpoint_is_served_by_a_replica_of_its_base(api, dave, model_id, api_key, tiny_model_dir,
                                                                  tmp_path):
    """Document 003's adapter deployment beside a running endpoint of its base: the base replica loads the
    adapter at run time, the adapter endpoint keeps no replica of its own, and its requests get the
    adapter's own answers from the base replica."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.unit.test_serving import make_adapter
    from weft.storage import get_storage
    from weft.tables import Adapter, Model

    base = deploy(api, dave, model_id, endpoint_name="Base Host", instance_count=1)
    folder = make_adapter(tiny_model_dir, tmp_path / "lora", seed=3, modules=["q_proj", "v_proj", "down_proj"])
    user_id = api.get("/api/v1/auth/me", headers=dave).json()["id"]
    with session_scope() as s:
        adapter = Adapter(user_id=user_id, name="hosted lora", base_model_id=model_id, method="lora",
                          storage_key=f"adapters/hosted-{model_id}")
        tuned = Model(user_id=user_id, name="hosted lora", type="fine-tuned", provider_type="adapter",
                      storage_uri=f"file://{folder}", details={"adapter_id": adapter.id, "base_model_id": model_id},
                      scan={"status": "SAFE", "total_issues": 0}, scan_verified=True)
        adapter.model_id = tuned.id
        s.add_all([adapter, tuned])
        adapter_id = adapter.id
    get_storage().put_dir(folder, f"adapters/hosted-{model_id}")

    t = time.monotonic()
    r = api.post("/api/v1/deployments", headers=dave, json={"adapter_id": adapter_id, "name": "Hosted LoRA"})
    assert r.status_code == 202, r.text
    hosted_id = r.json()["deployment_id"]
    assert wait_status(api, dave, r.json()["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    wait_for(lambda: not live_workers(api, dave, hosted_id)
             and any(e["action"] == "hosted" for e in view(api, dave, hosted_id)["events"]), 120,
             "the adapter endpoint is served by the base replica, with no replica of its own")
    timing("deploy the adapter onto the base replica", t)

    prompt = "check the oil level"
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(folder)).eval()
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.inference_mode():
        out = reference.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    want = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    since = last_record_id()
    for model in ("hosted-lora", "base-host"):
        r = api.post("/v1/completions", headers=api_key, json={"model": model, "prompt": prompt, "max_tokens": 8,
                                                                "temperature": 0})
        assert r.status_code == 200, r.text
        if model == "hosted-lora":
            assert r.json()["choices"][0]["text"] == want
        else:
            assert r.json()["choices"][0]["text"] != want  # the base answers without the adapter
    wait_records(hosted_id, since, 1)
    base_replica = healthy_workers(api, dave, base["id"])[0]["id"]
    assert [rec.replica_id for rec in records_since(hosted_id, since)] == [base_replica]
