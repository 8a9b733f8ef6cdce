"""`weft up --profile production` end to end: PostgreSQL for weft's and Prefect's tables, S3 storage,
two cpu workers, two API processes (one stack for the module). A model onboarded through API process 1
reads back through API process 2, its files in the bucket and its flow run in Prefect's database; then
the faults, each driven for real: a training worker SIGKILLed mid-run, an API process SIGKILLed with
webhook deliveries due, the database stopped under load, the S3 server stopped during an upload."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.e2e import (
    DEPLOY,
    LOCAL,
    local_steps,
    post_sequence,
    register,
    tiny_deploy_steps,
    wait_status,
)
from tests.helpers.receiver import Receiver
from tests.helpers.records import mapping_records
from weft.platform import Platform, ProfileError, descendants
from weft.settings import Settings
from weft.storage import Storage
from weft.training.checkpoints import CheckpointStore

pytestmark = pytest.mark.e2e
DRIVER_WORDS = ("psycopg", "sqlalchemy", "Traceback", "botocore", "OperationalError")


@pytest.fixture(scope="module")
def prod(production_stack):
    return production_stack


@pytest.fixture(scope="module")
def pat(prod) -> dict[str, str]:
    return register(prod.apis[0], "pat")


@pytest.fixture(scope="module")
def onboarding(prod, pat, tiny_model_dir: Path) -> dict:
    """The tiny model onboarded from disk through API process 1; the last step's answer."""
    return post_sequence(prod.apis[0], pat, LOCAL, local_steps("disk", str(tiny_model_dir), name="tiny llama"))


def test_production_profile_names_missing_settings(tmp_path: Path):
    settings = Settings(home=tmp_path, database_url=None, storage_url="file:///tmp/x")
    with pytest.raises(ProfileError) as err:
        Platform(settings=settings, profile="production").start()
    message = str(err.value)
    assert all(v in message for v in ("WEFT_DATABASE_URL", "WEFT_PREFECT_DATABASE_URL", "WEFT_STORAGE_URL"))
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_onboard_through_one_api_process_read_through_the_other(prod, pat, onboarding):
    stack = prod
    first, second = stack.apis
    assert first.base_url != second.base_url
    done = wait_status(second, pat, onboarding["workflow_id"], {"COMPLETED", "FAILED"}, timeout=240)
    assert done["status"] == "COMPLETED", done

    [summary] = [m for m in second.get("/api/v1/models", headers=pat).json()["data"] if m["name"] == "tiny llama"]
    model = second.get(f"/api/v1/models/{summary['id']}", headers=pat).json()
    assert model["details"]["architecture"] == "LlamaForCausalLM" and model["scan"]["status"] == "SAFE"
    assert model["storage_uri"].startswith(f"s3://{stack.bucket}/weft/")

    fs = stack.fs()
    stored = fs.find(model["storage_uri"].removeprefix("s3://"))
    assert any(p.endswith("/model.safetensors") for p in stored), stored
    assert fs.find(f"{stack.bucket}/weft/prefect-results"), "the resumable steps' results are on S3"

    # weft's rows and Prefect's flow runs are on PostgreSQL
    assert stack.query(stack.weft_database, "SELECT name FROM model WHERE id = %(id)s", id=summary["id"]) == \
        [("tiny llama",)]
    runs = stack.query(stack.prefect_database, "SELECT state_type FROM flow_run WHERE id = %(id)s",
                       id=onboarding["flow_run_id"])
    assert runs == [("COMPLETED",)]
    [(hardware,)] = stack.query(stack.weft_database, "SELECT hardware FROM cluster WHERE pool_name = 'cpu'")
    assert hardware["cpu_count"] >= 1  # `weft worker` reported this machine into the configured database

    # both cpu workers are online under distinct names; the result-storage block carries s3fs's options
    workers = httpx.post(f"{stack.prefect_api}/work_pools/cpu/workers/filter", json={}).json()
    online = {w["name"] for w in workers if w["status"] == "ONLINE"}
    assert len(online) >= 2 and all(n.endswith(("-cpu-1", "-cpu-2")) for n in online), workers
    block = httpx.post(f"{stack.prefect_api}/block_documents/filter",
                       json={"block_documents": {"name": {"any_": ["weft-results"]}}, "include_secrets": True}).json()
    assert block and block[0]["data"]["settings"]["client_kwargs"]["endpoint_url"] == stack.s3.endpoint


def upload_dataset(api: httpx.Client, headers: dict, name: str, rows: list[dict]) -> str:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    r = api.post("/api/v1/datasets/upload", headers=headers, data={"name": name},
                 files={"file": (f"{name}.jsonl", body, "application/jsonl")})
    assert r.status_code in (200, 201), r.text
    dataset_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while (status := api.get(f"/api/v1/datasets/{dataset_id}", headers=headers).json()["status"]) == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert status == "ready", status
    return dataset_id


def flow_run(prod, flow_run_id: str) -> dict:
    return httpx.get(f"{prod.prefect_api}/flow_runs/{flow_run_id}", timeout=10).json()


def worker_running(prod, flow_run_id: str, timeout: float = 120) -> str:
    """The name of the worker whose process tree holds the flow run's process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = flow_run(prod, flow_run_id).get("infrastructure_pid")
        if pid:
            pid = int(str(pid).rsplit(":", 1)[-1])
            for name in prod.platform.worker_names:
                if pid in {p for p, _ in descendants(prod.platform.pid(name))}:
                    return name
        time.sleep(0.5)
    raise AssertionError(f"no worker runs flow run {flow_run_id}")


@pytest.mark.timeout(900)  # crash detection alone waits ~1.5 min, then train, evaluate, scan, deploy
def test_killed_training_worker_resumes_on_the_other_worker_from_s3(prod, pat, onboarding, tmp_path):
    api1, api2 = prod.apis
    assert wait_status(api1, pat, onboarding["workflow_id"], {"COMPLETED", "FAILED"}, timeout=240)["status"] == "COMPLETED"
    dataset_id = upload_dataset(api1, pat, "mapping", mapping_records(96))
    config = {"base_model": "tiny llama", "dataset_id": dataset_id, "algorithm": "lora", "rank": 8, "alpha": 16,
              "batch_size": 8, "max_steps": 80, "checkpoint_steps": 10, "logging_steps": 10,
              "learning_rate": 1e-2, "max_seq_length": 64, "provider": "local"}
    job = api1.post("/api/v1/jobs", headers=pat, json={"config": config})
    assert job.status_code == 201, job.text
    job_id, first_run = job.json()["job_id"], job.json()["flow_run_id"]
    storage = Storage(prod.settings.storage_root, **prod.settings.storage_options)
    checkpoints = CheckpointStore(storage, f"runs/{job_id}/checkpoints")

    victim = worker_running(prod, first_run)
    deadline = time.monotonic() + 240
    while not checkpoints.steps():  # a complete checkpoint in S3, then kill mid-training
        assert time.monotonic() < deadline, "no checkpoint reached S3"
        time.sleep(0.2)
    prod.platform.kill(victim)  # SIGKILL the worker and its flow-run process
    killed_after = checkpoints.steps()[-1]
    assert api2.get(f"/api/v1/jobs/{job_id}", headers=pat).json()["status"] == "running"

    crashed = wait_status(api2, pat, job_id, {"FAILED", "COMPLETED"}, timeout=240)  # heartbeats stop: Crashed
    assert crashed["status"] == "FAILED", crashed
    assert flow_run(prod, first_run)["state"]["type"] == "CRASHED"

    retried = api2.post(f"/api/v1/workflows/{job_id}/retry", headers=pat)
    assert retried.status_code == 200, retried.text
    survivor = next(n for n in prod.platform.worker_names if n != victim)
    assert worker_running(prod, retried.json()["flow_run_id"]) == survivor
    done = wait_status(api1, pat, job_id, {"FAILED", "COMPLETED"}, timeout=400)
    assert done["status"] == "COMPLETED", done
    view = api1.get(f"/api/v1/jobs/{job_id}", headers=pat).json()
    assert view["metrics"]["global_step"] == 80
    logs = [m["message"] for m in api1.get(f"/api/v1/jobs/{job_id}/logs", params={"lines": 1000},
                                            headers=pat).json()["logs"]]
    resumed = [m for m in logs if "resuming from checkpoint-" in m]
    assert resumed and int(re.search(r"checkpoint-(\d+)", resumed[-1]).group(1)) >= killed_after
    prod.platform.restart(victim)

    test_set = tmp_path / "mapping-test.jsonl"
    test_set.write_text("\n".join(json.dumps(r) for r in mapping_records(8)))
    created = api1.post(f"/api/v1/models/{view['model_id']}/evaluate", headers=pat, json={
        "test_set_path": str(test_set), "base_model_name": "tiny llama", "max_new_tokens": 8, "benchmarks": []})
    assert created.status_code == 201, created.text
    evaluation = wait_status(api2, pat, created.json()["evaluation_id"], {"COMPLETED", "FAILED"}, timeout=300)
    assert evaluation["status"] == "COMPLETED", evaluation

    scan = api2.post("/api/v1/models/security-scan", headers=pat, json={
        "workflow_total_steps": 3, "step_number": 1, "trigger_workflow": True, "model_id": view["model_id"]})
    assert scan.status_code == 200, scan.text
    assert wait_status(api2, pat, scan.json()["workflow_id"], {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    steps = tiny_deploy_steps(view["model_id"], "mapping-prod")
    deployed = post_sequence(api1, pat, DEPLOY, steps)
    assert wait_status(api1, pat, deployed["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    endpoint_id = next(e["id"] for e in api1.get("/api/v1/endpoints", headers=pat).json()["data"]
                       if e["name"] == "mapping-prod")
    serving = live_replicas(api1, pat, endpoint_id)
    adopt_after_restarts(prod)
    assert live_replicas(api2, pat, endpoint_id) == serving  # adopted, not duplicated
    for api in prod.apis:
        predicted = api.post("/api/v1/inference/predict", headers=pat, json={
            "model_id": view["model_id"], "prompt": "map 3", "max_tokens": 4, "temperature": 0})
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["tokens_output"] > 0


def live_replicas(api: httpx.Client, headers: dict, endpoint_id: str) -> set[str]:
    view = api.get(f"/api/v1/endpoints/{endpoint_id}", headers=headers).json()
    return {w["id"] for w in view["workers"] if w["state"] in ("starting", "healthy")}


def adopt_after_restarts(prod) -> None:
    """Restart API process 1 and replace the endpoint controller's run (what `weft up` does when it ends);
    return once the new controller holds the lease and has made a few passes."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from weft import runs
    from weft.serving import controller

    prod.platform.restart("api-1")
    with temporary_settings({PREFECT_API_URL: prod.prefect_api}):
        for flow_run_id in runs.active_runs(controller.DEPLOYMENT):
            runs.cancel(flow_run_id)
        new = controller.start()
    deadline = time.monotonic() + 120
    while not prod.query(prod.weft_database, "SELECT 1 FROM controller_lease WHERE holder = %(h)s", h=new):
        assert time.monotonic() < deadline, "the new controller did not take the lease"
        time.sleep(1)
    time.sleep(3 * prod.settings.controller_interval_seconds)


def test_api_process_killed_with_deliveries_due_delivers_every_event_once(prod, pat, tiny_model_dir):
    api1, api2 = prod.apis
    receiver = Receiver(fail_first=2)  # the first attempts fail: retries are due while api-1 dies
    try:
        hook = api1.post("/api/v1/webhooks", headers=pat, json={
            "url": receiver.url, "events": ["workflow.completed", "model.created"]})
        assert hook.status_code == 201, hook.text
        started = [post_sequence(api2, pat, LOCAL, local_steps("disk", str(tiny_model_dir), name=f"tiny copy {i}"))
                   ["workflow_id"] for i in range(2)]
        deadline = time.monotonic() + 60
        while not receiver.requests:  # a delivery attempt failed: its retry is due
            assert time.monotonic() < deadline, "no delivery attempt"
            time.sleep(0.1)
        prod.platform.kill("api-1", signal.SIGKILL)
        for workflow_id in started:  # workflows complete while api-1 is down
            assert wait_status(api2, pat, workflow_id, {"COMPLETED", "FAILED"}, timeout=240)["status"] == "COMPLETED"
        prod.platform.restart("api-1")
        expected = 2 * 2  # per workflow: workflow.completed + model.created
        deadline = time.monotonic() + 120
        while len(delivered := receiver.delivered_events()) < expected:
            assert time.monotonic() < deadline, delivered
            time.sleep(0.5)
        time.sleep(5)  # any duplicate from a stolen lease or a replayed event would arrive by now
        delivered = receiver.delivered_events()
        assert len(delivered) == expected and all(count == 1 for count in delivered.values()), delivered
        assert prod.apis[0].get("/api/v1/auth/me", headers=pat).status_code == 200  # api-1 is back
    finally:
        receiver.close()


def hammer(prod, headers: dict, stop: threading.Event, results: list) -> None:
    """Alternate authenticated reads and step posts across both API processes until `stop`."""
    clients = [httpx.Client(base_url=url, timeout=30) for url in prod.api_urls]
    i = 0
    try:
        while not stop.is_set():
            api = clients[i % 2]
            t = time.monotonic()
            try:
                if i % 3 == 0:
                    r = api.post(LOCAL, headers=headers, json={"workflow_total_steps": 6, "step_number": 1,
                                                               "trigger_workflow": False, "modality": "llm"})
                else:
                    r = api.get("/api/v1/auth/me", headers=headers)
                results.append((t, r.status_code, r.text, r.json().get("workflow_id") if r.status_code == 200
                                else None))
            except httpx.HTTPError as exc:
                results.append((t, None, repr(exc), None))
            i += 1
            time.sleep(0.05)
    finally:
        for c in clients:
            c.close()


def test_database_outage_answers_503_and_recovers(prod, pat):
    results: list = []
    stop = threading.Event()
    thread = threading.Thread(target=hammer, args=(prod, pat, stop, results))
    thread.start()
    try:
        time.sleep(3)
        before = [r for r in results if r[1] == 200 and r[3]]
        down_at = time.monotonic()
        prod.postgres.stop()
        time.sleep(5)
        prod.postgres.start()
        up_at = time.monotonic()
        time.sleep(12)
    finally:
        stop.set()
        thread.join()
    statuses = {r[1] for r in results}
    assert statuses <= {200, 503}, [r for r in results if r[1] not in (200, 503)][:3]
    outage = [r for r in results if r[1] == 503]
    assert outage, "no request saw the outage"
    for _, _, text, _ in outage:
        assert json.loads(text)["error"]["code"] == "SERVICE_UNAVAILABLE" and not any(w in text for w in DRIVER_WORDS)
    assert all(down_at - 1 <= t <= up_at + 10 for t, *_ in outage)  # 503s only around the outage
    tail = [r for r in results if r[0] > up_at + 8]
    assert tail and all(r[1] == 200 for r in tail), tail[:3]  # recovered without a restart
    for _, _, _, workflow_id in before:  # acknowledged before the outage: still there
        assert prod.apis[1].get(f"/api/v1/workflows/{workflow_id}", headers=pat).status_code == 200
    assert all(prod.platform.alive(n) for n in prod.platform.children), "a platform process died in the outage"


class StopsS3MidUpload:
    """A file-like upload body (~20 MB of JSONL) that stops the S3 server once 2 MB have been read."""

    def __init__(self, s3) -> None:
        self.s3, self.sent, self.total = s3, 0, 20 * 1024 * 1024
        self.line = (json.dumps({"text": "x" * 1000}) + "\n").encode()

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.total:
            return b""
        if self.sent >= 2 * 1024 * 1024 and self.s3.proc is not None:
            self.s3.stop()
        chunk = self.line * max(1, (size if size > 0 else 65536) // len(self.line))
        self.sent += len(chunk)
        return chunk


def test_s3_outage_during_upload_is_503_and_stores_nothing(prod, pat):
    api = prod.apis[0]
    try:
        r = api.post("/api/v1/datasets/upload", headers=pat, data={"name": "half"},
                     files={"file": ("half.jsonl", StopsS3MidUpload(prod.s3), "application/jsonl")}, timeout=120)
    finally:
        if prod.s3.proc is None:
            prod.s3.start()
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE" and not any(w in r.text for w in DRIVER_WORDS)
    names = {d["name"] for d in api.get("/api/v1/datasets", headers=pat).json()["data"]}
    assert "half" not in names  # no orphan row
    leftovers = [p for p in prod.fs().find(prod.bucket) if "half" in p or ".partial" in p]
    assert not leftovers, leftovers  # nothing half-stored
