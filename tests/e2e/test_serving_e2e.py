"""End to end on the real stack: onboard → scan → deploy (1 replica) → predict / batch-predict through
the gateway → add a worker → both replicas serve → kill one → requests keep succeeding → stop the
endpoint → 503. Plus the deploy gate (409), the openai client and the document-000 deploy call.

RelayCore: a tiny model deployed behind an endpoint writes service recommendations for the RelayCore
stand-in's vehicles (the relaycore_recommendations flow on the `cpu-light` worker,
predictions through the gateway), and the stand-in receives them; a vehicle RelayCore refuses is recorded
in the run's logs while the others are sent; when every vehicle fails, the run fails."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from tests.helpers.e2e import (
    CHAT_TEMPLATE_ID,
    DEPLOY,
    onboard_from_disk,
    post_sequence,
    register,
    tiny_deploy_steps,
    wait_status,
)
from tests.helpers.relaycore import VEHICLES, RelayCoreStandIn
from weft.db import session_scope
from weft.integrations.recommendations import build_prompt, parse_answer
from weft.integrations.relaycore import Vehicle
from weft.tables import InferenceRecord, Model, Replica

pytestmark = pytest.mark.e2e
ADD_WORKER = "/api/v1/endpoints/add-worker"


@pytest.fixture(scope="module")
def carol(api) -> dict[str, str]:
    return register(api, "carol")


@pytest.fixture(scope="module")
def tiny(api, carol, tiny_model_dir: Path) -> str:
    """The tiny model onboarded from disk (its last onboarding step is the security scan: SAFE)."""
    model_id = onboard_from_disk(api, carol, tiny_model_dir, "tiny serve")
    assert api.get(f"/api/v1/models/{model_id}/security-scan", headers=carol).json()["status"] == "SAFE"
    return model_id


def server_pid(url: str) -> int:
    """The replica server process listening on `url`'s port."""
    port = url.rsplit(":", 1)[1]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"weft.serving.server" in args and port.encode() in args:
            return int(cmdline.parent.name)
    raise AssertionError(f"no server process on port {port}")


def replica_ids_served(endpoint_id: str, since_id: int) -> set[str]:
    with session_scope() as s:
        rows = s.exec(select(InferenceRecord).where(InferenceRecord.endpoint_id == endpoint_id,
                                                    InferenceRecord.id > since_id)).all()
        return {r.replica_id for r in rows if r.status_code == 200}


def last_record_id() -> int:
    with session_scope() as s:
        return max([r.id for r in s.exec(select(InferenceRecord)).all()] or [0])


def wait_records(endpoint_id: str, since_id: int, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as s:
            if len(s.exec(select(InferenceRecord).where(InferenceRecord.endpoint_id == endpoint_id,
                                                        InferenceRecord.id > since_id)).all()) >= count:
                return
        time.sleep(0.2)
    raise AssertionError("the gateway did not record the requests")


def test_deploy_predict_add_worker_kill_and_stop(api, carol, tiny, stack, tmp_path):
    steps = tiny_deploy_steps(tiny, "tiny-e2e")
    body = post_sequence(api, carol, DEPLOY, steps)
    view = wait_status(api, carol, body["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)
    assert view["status"] == "COMPLETED", view
    endpoint = next(e for e in api.get("/api/v1/endpoints", headers=carol).json()["data"] if e["name"] == "tiny-e2e")
    assert endpoint["status"] == "active" and len(endpoint["workers"]) == 1
    assert endpoint["workers"][0]["state"] == "healthy" and endpoint["plan"]["replicas"] == 1
    assert api.get(f"/api/v1/deployments/{endpoint['id']}", headers=carol).json()["status"] == "running"

    predicted = api.post("/api/v1/inference/predict", headers=carol, json={
        "model_id": tiny, "prompt": "check the oil level", "max_tokens": 8, "temperature": 0})
    assert predicted.status_code == 200, predicted.text
    p = predicted.json()
    assert p["tokens_input"] > 0 and 0 < p["tokens_output"] <= 8 and p["latency_ms"] > 0 and p["id"].startswith("pred_")
    batch = api.post("/api/v1/inference/batch-predict", headers=carol, json={
        "model_id": tiny, "max_tokens": 4, "temperature": 0,
        "requests": [{"id": f"req_{i}", "prompt": f"rotate the tires {i}"} for i in range(4)]}).json()
    assert [r["id"] for r in batch["results"]] == [f"req_{i}" for i in range(4)]
    assert batch["total_tokens_output"] == sum(r["tokens_output"] for r in batch["results"]) > 0
    tested = api.post(f"/api/v1/deployments/{endpoint['id']}/test", headers=carol,
                      json={"prompt": "Once upon a time", "max_tokens": 4}).json()
    assert tested["tokens_generated"] > 0 and tested["latency_ms"] > 0

    key = api.post("/api/v1/auth/api-keys", headers=carol, json={"name": "openai"}).json()["key"]
    from openai import OpenAI

    client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key)
    completion = client.completions.create(model="tiny-e2e", prompt="replace the brake pads", max_tokens=4,
                                           temperature=0)
    assert completion.choices[0].text is not None and completion.usage.completion_tokens > 0
    chat = client.chat.completions.create(model="tiny-e2e", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=4, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(model="tiny-e2e", messages=[{"role": "user", "content": "hello"}],
                                                 max_tokens=4, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == chat.choices[0].message.content  # relayed chunk by chunk through the gateway
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from weft.evaluation.harness import PROJECT_TASKS_DIR, stage_task_dirs

    served = f"{stack.api_url}/endpoints/tiny-e2e/v1/completions"  # this endpoint's base URL through the gateway
    results = simple_evaluate(
        model="local-completions",
        model_args={"model": "tiny-e2e", "base_url": served, "tokenizer_backend": "remote", "auth_token": key,
                    "header": {"Authorization": f"Bearer {key}"}, "num_concurrent": 1, "max_retries": 1,
                    "max_length": 256},
        tasks=["weft_arith"], task_manager=TaskManager(include_path=[str(p) for p in stage_task_dirs(
            [PROJECT_TASKS_DIR], tmp_path)], include_defaults=False), limit=4, log_samples=False, bootstrap_iters=0)
    assert 0.0 <= results["results"]["weft_arith"]["exact_match,none"] <= 1.0

    added = post_sequence(api, carol, ADD_WORKER, [
        {"workflow_total_steps": 3, "step_number": 1, "endpoint_id": endpoint["id"], "additional_concurrency": 1},
        {"step_number": 3, "trigger_workflow": True}])
    assert wait_status(api, carol, added["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    workers = api.get(f"/api/v1/endpoints/{endpoint['id']}", headers=carol).json()["workers"]
    assert [w["state"] for w in workers] == ["healthy", "healthy"]

    since = last_record_id()
    chat_body = {"model": "tiny-e2e", "prompt": "check the oil level", "max_tokens": 6, "temperature": 0}
    headers = {"Authorization": f"Bearer {key}"}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: api.post("/v1/completions", headers=headers, json=chat_body), range(12)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    wait_records(endpoint["id"], since, 12)
    assert replica_ids_served(endpoint["id"], since) == {w["id"] for w in workers}  # both replicas took traffic

    os.kill(server_pid(workers[0]["url"]), signal.SIGKILL)
    since = last_record_id()
    for _ in range(6):
        r = api.post("/v1/completions", headers=headers, json=chat_body)
        assert r.status_code == 200, r.text
    wait_records(endpoint["id"], since, 6)
    assert replica_ids_served(endpoint["id"], since) == {workers[1]["id"]}
    deadline = time.monotonic() + 30  # the dead replica's run fails and it leaves the worker list's healthy set
    while api.get(f"/api/v1/endpoints/{endpoint['id']}", headers=carol).json()["workers"][0]["state"] == "healthy":
        assert time.monotonic() < deadline
        time.sleep(1)

    stopping = api.delete(f"/api/v1/endpoints/{endpoint['id']}", headers=carol).json()
    assert stopping["status"] == "stopping"  # its replicas drain, then the controller stops them
    r = api.post("/v1/completions", headers=headers, json=chat_body)
    assert r.status_code == 503 and r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    r = api.post("/api/v1/inference/predict", headers=carol, json={"model_id": tiny, "prompt": "x", "max_tokens": 2})
    assert r.status_code == 503
    deadline = time.monotonic() + 60
    while (view := api.get(f"/api/v1/endpoints/{endpoint['id']}", headers=carol).json())["status"] != "stopped":
        assert time.monotonic() < deadline, view["events"][:5]
        time.sleep(1)
    assert all(w["state"] == "stopped" for w in view["workers"])
    deadline = time.monotonic() + 30  # the cancelled replica runs end and their servers with them
    while True:
        with session_scope() as s:
            urls = [r.url for r in s.exec(select(Replica).where(Replica.endpoint_id == endpoint["id"])).all()]
        if not any(httpx_alive(u) for u in urls):
            break
        assert time.monotonic() < deadline, urls
        time.sleep(1)


def httpx_alive(url: str | None) -> bool:
    if not url:
        return False
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_deploying_a_model_whose_scan_is_not_safe_is_refused(api, carol, tiny):
    me = api.get("/api/v1/auth/me", headers=carol).json()
    with session_scope() as s:
        base = s.get(Model, tiny)
        risky = Model(user_id=me["id"], name="risky", provider_type="disk", storage_uri=base.storage_uri,
                      details=base.details, scan={"status": "HIGH", "total_issues": 1}, scan_verified=False)
        s.add(risky)
        s.flush()
        risky_id = risky.id
    r = api.post(f"/api/v1/models/{risky_id}/deploy", headers=carol, json={"instance_count": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "SCAN_NOT_SAFE", r.text
    assert not [e for e in api.get("/api/v1/endpoints", headers=carol).json()["data"] if e["model_id"] == risky_id]
    assert api.post(f"/api/v1/models/{risky_id}/security-scan/override", headers=carol,
                    json={"reason": "reviewed the finding by hand"}).status_code == 200

    from sqlmodel import Session

    from weft.db import get_engine
    from weft.specs.serving import admit_deploy

    with Session(get_engine()) as s:
        admit_deploy(s, {"model_id": risky_id})  # the override opens the gate


KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: dev
  cluster: {server: "https://10.0.0.1:6443"}
users:
- name: dev
  user: {token: "super-secret-token"}
contexts:
- name: dev
  context: {cluster: dev, user: dev}
current-context: dev
"""


def test_add_cluster_creates_a_work_pool_and_keeps_the_config_secret(api, carol, stack):
    form = {"step_number": "1", "workflow_total_steps": "3", "trigger_workflow": "true", "name": "Xeon Dev",
            "icon": "icons/providers/openai.png", "ingress_url": "https://20.244.107.114:10001"}
    bad = api.post("/api/v1/clusters/clusters", headers=carol, data=form,
                   files={"configuration_file": ("c.yaml", b"- just\n- a list\n", "application/yaml")})
    assert bad.status_code == 422
    r = api.post("/api/v1/clusters/clusters", headers=carol, data=form,
                 files={"configuration_file": ("kubeconfig.yaml", KUBECONFIG.encode(), "application/yaml")})
    assert r.status_code == 200, r.text
    assert "super-secret-token" not in r.text
    assert wait_status(api, carol, r.json()["workflow_id"], {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    listed = api.get("/api/v1/clusters", headers=carol)
    assert "super-secret-token" not in listed.text
    clusters = {c["pool_name"]: c for c in listed.json()["data"]}
    assert clusters["xeon-dev"]["pool_type"] == "kubernetes" and clusters["xeon-dev"]["has_configuration"]
    assert clusters["cpu"]["hardware"]["cpu_count"] >= 1  # reported by `weft up` for its own pool
    pool = httpx.get(f"{stack.settings.prefect_api}/work_pools/xeon-dev").json()
    assert pool["type"] == "kubernetes"
    deployment = httpx.get(f"{stack.settings.prefect_api}/deployments/name/serve_replica/xeon-dev").json()
    assert deployment["work_pool_name"] == "xeon-dev"


class Provider(__import__("http.server").server.BaseHTTPRequestHandler):
    """An OpenAI-compatible cloud provider on localhost: answers completions, remembers the auth header."""

    seen: list[tuple[str, str, dict]] = []

    def do_POST(self):
        import json

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Provider.seen.append((self.path, self.headers.get("Authorization", ""), body))
        payload = json.dumps({"id": "cmpl-1", "object": "text_completion", "model": body["model"],
                              "choices": [{"index": 0, "text": " from the cloud", "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_cloud_model_endpoint_proxies_with_the_stored_credential(api, carol):
    import http.server
    import threading

    from weft.tables import CloudModel
    from weft.tables import Provider as ProviderRow

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    me = api.get("/api/v1/auth/me", headers=carol).json()
    with session_scope() as s:
        provider = ProviderRow(id=f"local-{me['id'][:8]}", name="Local cloud",
                               base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
        cloud = CloudModel(id=f"cm-{me['id'][:8]}", provider_id=provider.id, name="gpt-local", uri="local/gpt-local")
        model = Model(user_id=me["id"], name="gpt-local", type="cloud", provider_type="cloud_model",
                      provider_id=provider.id, cloud_model_id=cloud.id, uri=cloud.uri)
        s.add(provider)
        s.flush()
        s.add_all([cloud, model])
        s.flush()
        model_id = model.id
    credential = api.post("/api/v1/credentials", headers=carol, json={
        "name": "local cloud key", "provider_type": "openai", "secret": "sk-cloud-123"}).json()
    steps = [{"workflow_total_steps": 7, "step_number": 1, "project_id": "p1", "model_id": model_id},
             {"step_number": 2, "credential_id": credential["id"]},
             {"step_number": 3, "template_id": CHAT_TEMPLATE_ID},
             {"step_number": 4, "endpoint_name": "cloud-e2e", "deploy_config": {
                 "concurrent_requests": 10, "avg_sequence_length": 100, "avg_context_length": 102}},
             {"step_number": 6, "trigger_workflow": True, "cluster_id": None}]
    body = post_sequence(api, carol, DEPLOY, steps)
    assert wait_status(api, carol, body["workflow_id"], {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    endpoint = next(e for e in api.get("/api/v1/endpoints", headers=carol).json()["data"] if e["name"] == "cloud-e2e")
    assert endpoint["kind"] == "proxy" and endpoint["status"] == "active" and endpoint["workers"] == []
    r = api.post("/api/v1/inference/predict", headers=carol, json={"model_id": model_id, "prompt": "hi", "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["output"] == " from the cloud" and r.json()["tokens_output"] == 4
    path, auth, sent = Provider.seen[-1]
    assert (path, auth, sent["model"]) == ("/v1/completions", "Bearer sk-cloud-123", "gpt-local")
    server.shutdown()


# -- RelayCore: recommendations written by a deployed model ------------------------------------------------
RELAYCORE = "/api/v1/integrations/relaycore"
KEY = "rc_e2e_key_0123456789"
REFUSED = {**VEHICLES[0], "id": "veh_refused", "vin": "2T1BURHE0JC000000", "make": "Toyota", "model": "Corolla"}
CONCERN = "Strange noise when braking"
MAX_TOKENS = 24  # the tiny model's context is 256 tokens; a prompt is ~176


@pytest.fixture(scope="module")
def relaycore():
    with RelayCoreStandIn(KEY, vehicles=[*VEHICLES, REFUSED], refuse_vins={REFUSED["vin"]}) as server:
        yield server


@pytest.fixture(scope="module")
def relay_endpoint(api, carol, tiny) -> dict:
    """The tiny model deployed for the RelayCore flow (one replica, one sequence at a time)."""
    steps = tiny_deploy_steps(tiny, "tiny-relaycore")
    body = post_sequence(api, carol, DEPLOY, steps)
    assert wait_status(api, carol, body["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    return next(e for e in api.get("/api/v1/endpoints", headers=carol).json()["data"] if e["name"] == "tiny-relaycore")


def start_recommendations(api, headers, endpoint_id: str) -> dict:
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


def test_recommendations_from_a_deployed_model_reach_relaycore(api, stack, carol, relay_endpoint, relaycore):
    r = api.put(RELAYCORE, headers=carol, json={"base_url": relaycore.base_url, "api_key": KEY})
    assert r.status_code == 200, r.text
    started = start_recommendations(api, carol, relay_endpoint["id"])
    view = wait_status(api, carol, started["workflow_id"], {"COMPLETED", "FAILED"}, timeout=180)
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
            InferenceRecord.endpoint_id == relay_endpoint["id"], InferenceRecord.status_code == 200))}
    assert {build_prompt(v, CONCERN) for v in vehicles.values()} <= prompts

    # the descriptions are the model's own words: one sequence at a time and greedy, so asking again
    # gives the same answer, and parsing it gives what RelayCore received
    for batch in relaycore.received:
        vehicle = vehicles[batch["vin"]]
        again = api.post(f"/endpoints/{relay_endpoint['slug']}/v1/completions", headers=carol, json={
            "prompt": build_prompt(vehicle, CONCERN), "max_tokens": MAX_TOKENS, "temperature": 0})
        assert again.status_code == 200, again.text
        expected = parse_answer(again.json()["choices"][0]["text"], vehicle)
        assert [r["description"] for r in batch["recommendations"]] == [r.description for r in expected]
        for rec in batch["recommendations"]:
            assert rec["priority"] in {"low", "medium", "high"} and rec["due_date"].endswith("T00:00:00Z")
            assert rec["details"]["current_mileage"] == vehicle.mileage

    # when RelayCore refuses every vehicle, nothing was sent and the run fails, saying why
    relaycore.refuse_vins |= set(vehicles)
    failed = wait_status(api, carol, start_recommendations(api, carol, relay_endpoint["id"])["workflow_id"],
                         {"COMPLETED", "FAILED"},
                         timeout=180)
    assert failed["status"] == "FAILED" and "no vehicle's recommendations were sent" in (failed["reason"] or ""), failed
    assert len(relaycore.received) == len(VEHICLES)
