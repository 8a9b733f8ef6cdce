"""End to end: a real Prefect server, `cpu` worker and API as subprocesses (what `make run` starts),
driven through document 004's step sequences."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from tests.helpers.e2e import LOCAL, local_steps, post_sequence, register, wait_status
from weft import pools
from weft.db import session_scope
from weft.tables import Model, WorkflowStep

pytestmark = pytest.mark.e2e

OPENAI = "6f1b5a3e-0a0b-4c59-9d0e-000000000001"
GPT_4O = "6f1b5a3e-0a0b-4c59-9d0e-100000000001"
CLOUD = "/api/v1/models/cloud-model-workflow"


@pytest.fixture(scope="module")
def alice(api) -> dict[str, str]:
    return register(api, "alice")


@pytest.fixture(scope="module")
def bob(api) -> dict[str, str]:
    return register(api, "bob")


def step_rows() -> int:
    with session_scope() as s:
        return len(s.exec(select(WorkflowStep)).all())


def test_local_model_sequence_registers_the_model(api, alice, tiny_model_dir: Path):
    body = post_sequence(api, alice, LOCAL, local_steps("disk", str(tiny_model_dir)))
    assert body["workflow_type"] == "add_local_model" and body["flow_run_id"]
    assert body["total_steps"] == 6 and body["current_step"] == 4 and body["next_step"] is None
    assert [s["id"] for s in body["steps"]] == ["validate_source", "fetch_model", "extract_metadata",
                                                "estimate_hardware", "register_model", "list_model_files",
                                                "scan_pickles", "validate_safetensors", "detect_code", "check_gguf",
                                                "roll_up_scan"]
    done = wait_status(api, alice, body["workflow_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    # scan steps are cached by the files' content: an earlier module's onboarding of these bytes is reused
    scans = {"scan_pickles", "validate_safetensors", "detect_code", "check_gguf"}
    assert {s["status"] for s in done["steps"] if s["id"] not in scans} == {"completed"}
    assert {s["status"] for s in done["steps"] if s["id"] in scans} <= {"completed", "cached"}

    models = api.get("/api/v1/models", headers=alice).json()
    [summary] = [m for m in models["data"] if m["name"] == "tiny llama"]
    model = api.get(f"/api/v1/models/{summary['id']}", headers=alice).json()
    details = model["details"]
    assert details["architecture"] == "LlamaForCausalLM"
    assert details["context_length"] == 256
    assert details["has_chat_template"] is True and details["license"] == "apache-2.0"
    from safetensors import safe_open

    with safe_open(tiny_model_dir / "model.safetensors", "np") as f:
        expected = sum(int(__import__("numpy").prod(f.get_slice(k).get_shape())) for k in f.keys())
    assert details["parameter_count"] == expected
    assert model["hardware"] and model["workflow_id"] == body["workflow_id"]
    assert model["scan"]["status"] == "SAFE" and model["scan_verified"] is True


@pytest.mark.parametrize("manual", [False, True])
def test_cloud_model_sequences(api, alice, manual: bool):
    name = "manual gpt" if manual else "seeded gpt"
    steps = [
        {"workflow_total_steps": 6, "step_number": 1, "provider_type": "cloud_model"},
        {"step_number": 2, "provider_id": OPENAI},
        {"step_number": 3, "cloud_model_id": None if manual else GPT_4O},
        {"step_number": 4, "name": name, "tags": [{"name": "Tag1", "color": "#000000"}], "modality": "llm",
         **({"uri": "openai/gpt4"} if manual else {}), "trigger_workflow": True},
    ]
    body = post_sequence(api, alice, CLOUD, steps)
    assert wait_status(api, alice, body["workflow_id"], {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    [model] = [m for m in api.get("/api/v1/models", params={"limit": 100}, headers=alice).json()["data"]
               if m["name"] == name]
    assert model["type"] == "cloud"
    assert model["uri"] == ("openai/gpt4" if manual else "openai/gpt-4o")


def cloud_model(api, alice, name: str) -> dict:
    """Onboard a cloud model (the lightest flow) and wait for it; returns the finished workflow."""
    body = post_sequence(api, alice, CLOUD, [
        {"workflow_total_steps": 4, "step_number": 1, "provider_type": "cloud_model"},
        {"step_number": 2, "provider_id": OPENAI}, {"step_number": 3, "cloud_model_id": None},
        {"step_number": 4, "name": name, "uri": f"openai/{name}", "modality": "llm", "trigger_workflow": True}])
    done = wait_status(api, alice, body["workflow_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    return body


def test_light_flows_start_warm_and_cold_after_a_code_change(api, alice, stack):
    """The cpu-light worker hands a run to a pre-imported process; once the flow's code has changed on
    disk since that process started, the run starts cold (a fresh `python -m prefect.engine`) instead."""
    log = stack.log_of("worker-cpu-light")
    warm = cloud_model(api, alice, "warm start")
    assert f"flow run {warm['flow_run_id']} handed to warm process" in log.read_text()
    run = httpx.get(f"{stack.settings.prefect_api}/flow_runs/{warm['flow_run_id']}").json()
    pool = httpx.get(f"{stack.settings.prefect_api}/work_pools/{pools.LIGHT}").json()
    assert run["work_pool_name"] == pools.LIGHT and pool["type"] == "process", run

    flow_file = Path(__file__).resolve().parents[2] / "flows" / "add_cloud_model.py"
    before = flow_file.stat()
    os.utime(flow_file)  # what an edit does to the warm process's view of the code
    try:
        cold = cloud_model(api, alice, "cold start")
    finally:
        os.utime(flow_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (f"cold start of flow run {cold['flow_run_id']}: project modules changed" in log.read_text())


def test_double_trigger_creates_one_flow_run(api, alice, tiny_model_dir, stack):
    steps = local_steps("disk", str(tiny_model_dir), name="double")
    first = post_sequence(api, alice, LOCAL, steps[:3])
    trigger = {**steps[3], "workflow_id": first["workflow_id"]}
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: api.post(LOCAL, json=trigger, headers=alice), range(4)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    run_ids = {r.json()["flow_run_id"] for r in responses}
    assert len(run_ids) == 1
    again = api.post(LOCAL, json=trigger, headers=alice)  # the same run while it lives, 409 once finished
    assert (again.status_code == 200 and again.json()["flow_run_id"] in run_ids) or again.status_code == 409
    runs = httpx.post(f"{stack.settings.prefect_api}/flow_runs/filter", json={"limit": 200}).json()
    assert sum(1 for r in runs if r["parameters"].get("workflow_id") == first["workflow_id"]) == 1
    wait_status(api, alice, first["workflow_id"], {"COMPLETED", "FAILED"})


def hf_cache_put(repo: str, model_dir: Path) -> None:
    """Lay out `model_dir` in the Hugging Face cache the worker reads (HF_HOME/hub)."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    root = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(model_dir, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def test_failed_step_then_retry_uses_the_cache(api, alice, tiny_model_dir):
    body = post_sequence(api, alice, LOCAL, local_steps("hugging_face", "weft-tests/tiny-llama", name="from hf"))
    failed = wait_status(api, alice, body["workflow_id"], {"COMPLETED", "FAILED"})
    assert failed["status"] == "FAILED"
    assert "Hugging Face cache" in failed["reason"] and "HF_HUB_OFFLINE" in failed["reason"]
    stages = {s["id"]: s["status"] for s in failed["steps"]}
    assert stages["validate_source"] == "completed" and stages["fetch_model"] == "failed"
    assert stages["register_model"] == "not_run"

    hf_cache_put("weft-tests/tiny-llama", tiny_model_dir)
    retried = api.post(f"/api/v1/workflows/{body['workflow_id']}/retry", headers=alice)
    assert retried.status_code == 200, retried.text
    assert retried.json()["flow_run_id"] != failed["flow_run_id"]
    done = wait_status(api, alice, body["workflow_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    stages = {s["id"]: s["status"] for s in done["steps"]}
    assert stages["validate_source"] == "cached"
    assert stages["fetch_model"] == "completed" and stages["register_model"] == "completed"


class SlowFile(http.server.BaseHTTPRequestHandler):
    """Serves a 64 MiB .gguf at ~1 MiB/s so a download is still running when it is cancelled."""

    def do_GET(self):
        size = 64 * 1024 * 1024
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            for _ in range(size // (256 * 1024)):
                self.wfile.write(b"\0" * (256 * 1024))
                time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_cancel_running_onboarding_leaves_nothing(api, alice):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowFile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/slow-model.gguf"
        body = post_sequence(api, alice, LOCAL, local_steps("url", url, name="slow"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            view = api.get(f"/api/v1/workflows/{body['workflow_id']}", headers=alice).json()
            if {s["id"]: s["status"] for s in view["steps"]}["fetch_model"] == "running":
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"fetch never started: {view}")
        r = api.post(f"/api/v1/workflows/{body['workflow_id']}/cancel", headers=alice)
        assert r.status_code == 200, r.text
        assert wait_status(api, alice, body["workflow_id"], {"CANCELLED"}, timeout=60)["status"] == "CANCELLED"
        from weft.storage import get_storage

        deadline = time.monotonic() + 30
        while get_storage().exists(f"staging/{body['workflow_id']}") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not get_storage().exists(f"staging/{body['workflow_id']}")
        with session_scope() as s:
            assert s.exec(select(Model).where(Model.workflow_id == body["workflow_id"])).first() is None
        assert api.post(f"/api/v1/workflows/{body['workflow_id']}/cancel", headers=alice).status_code == 409
    finally:
        server.shutdown()


def assert_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) >= {"code", "message", "details"}


def test_bad_inputs_are_4xx_and_store_nothing(api, alice, bob, tiny_model_dir):
    before = step_rows()
    steps = local_steps("disk", str(tiny_model_dir))
    assert_error(api.post(LOCAL, json={**steps[1], "workflow_id": "no-such-workflow"}, headers=alice), 404)
    started = post_sequence(api, alice, LOCAL, steps[:2])
    wid = started["workflow_id"]
    before = step_rows()
    assert_error(api.post(LOCAL, json={**steps[2], "workflow_id": wid}, headers=bob), 404)
    assert_error(api.get(f"/api/v1/workflows/{wid}", headers=bob), 404)
    missing = {k: v for k, v in steps[2].items() if k != "name"}
    assert_error(api.post(LOCAL, json={**missing, "workflow_id": wid}, headers=alice), 422)
    assert_error(api.post(LOCAL, json={**steps[2], "tags": "not-a-list", "workflow_id": wid}, headers=alice), 422)
    assert_error(api.post(LOCAL, json={**steps[2], "step_number": "three", "workflow_id": wid}, headers=alice), 422)
    assert_error(api.post(LOCAL, json={**steps[2], "uri": "/definitely/not/here", "workflow_id": wid},
                          headers=alice), 422)
    traversal = f"{tiny_model_dir}/../../../../etc"
    r = api.post(LOCAL, json={**steps[2], "uri": traversal, "workflow_id": wid}, headers=alice)
    assert_error(r, 422)
    assert "'..'" in str(r.json()["error"]["details"])
    assert_error(api.post(LOCAL, json={**steps[2], "uri": "/etc", "workflow_id": wid}, headers=alice), 422)
    assert_error(api.post(LOCAL, json={**steps[3], "proprietary_credential_id": "nope", "workflow_id": wid},
                          headers=alice), 422)
    assert_error(api.post(LOCAL, json=steps[0]), 401)
    assert step_rows() == before
    assert api.get(f"/api/v1/workflows/{wid}", headers=alice).json()["current_step"] == 2

    done = post_sequence(api, alice, CLOUD, [
        {"workflow_total_steps": 4, "step_number": 1, "provider_type": "cloud_model"},
        {"step_number": 2, "provider_id": OPENAI},
        {"step_number": 3, "cloud_model_id": GPT_4O},
        {"step_number": 4, "name": "finished", "modality": "llm", "trigger_workflow": True},
    ])
    wait_status(api, alice, done["workflow_id"], {"COMPLETED"})
    before = step_rows()
    assert_error(api.post(CLOUD, json={"workflow_id": done["workflow_id"], "step_number": 4, "name": "x"},
                          headers=alice), 409)
    assert_error(api.post(CLOUD, json={"workflow_total_steps": 4, "step_number": 2, "provider_id": "missing"},
                          headers=alice), 422)
    assert step_rows() == before


def test_replacing_an_earlier_step_clears_later_ones(api, alice, tiny_model_dir):
    steps = local_steps("disk", str(tiny_model_dir))
    body = post_sequence(api, alice, LOCAL, steps[:3])
    r = api.post(LOCAL, json={**steps[1], "provider_type": "hugging_face", "workflow_id": body["workflow_id"]},
                 headers=alice)
    assert r.status_code == 200
    assert r.json()["current_step"] == 2 and r.json()["next_step"] == 3
    assert "uri" not in r.json()["data"] and r.json()["data"]["provider_type"] == "hugging_face"


def test_workflow_list_pages(api, alice):
    page = api.get("/api/v1/workflows", params={"limit": 2, "offset": 1}, headers=alice).json()
    assert page["meta"]["limit"] == 2 and page["meta"]["offset"] == 1 and page["meta"]["total"] >= 3
    assert len(page["data"]) == 2
    assert_error(api.get("/api/v1/workflows", params={"limit": 0}, headers=alice), 422)


def test_dataset_upload_then_analyze_through_the_api(api, alice, tmp_path):
    from weft.datasets.synthetic import write_jsonl

    path = tmp_path / "procedures.jsonl"
    planted = write_jsonl(path, 300, exact_duplicates=3, missing_tools=2)
    r = api.post("/api/v1/datasets/upload", headers=alice, data={"name": "service procedures"},
                 files={"file": ("procedures.jsonl", path.read_bytes(), "application/jsonl")})
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    deadline = time.monotonic() + 30
    while api.get(f"/api/v1/datasets/{dataset_id}", headers=alice).json()["status"] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert api.get(f"/api/v1/datasets/{dataset_id}/analysis", headers=alice).status_code == 404
    started = api.post(f"/api/v1/datasets/{dataset_id}/analyze", headers=alice)
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["id"] == dataset_id and body["workflow_id"] and body["status"] == "PENDING"
    done = wait_status(api, alice, body["workflow_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    assert {s["id"]: s["status"] for s in done["steps"]}["write_split"] == "not_run"
    analysis = api.get(f"/api/v1/datasets/{dataset_id}/analysis", headers=alice).json()["analysis"]
    assert analysis["record_count"] == planted.records
    assert analysis["quality_issues"]["duplicates"] == 3 and analysis["quality_issues"]["missing_values"] == 2


def test_security_scan_through_the_step_api(api, alice):
    models = api.get("/api/v1/models", params={"type": "base", "limit": 100}, headers=alice).json()["data"]
    model_id = next(m["id"] for m in models if m["name"] == "tiny llama")
    body = api.post("/api/v1/models/security-scan", headers=alice, json={
        "workflow_total_steps": 3, "step_number": 1, "trigger_workflow": True, "model_id": model_id}).json()
    assert body["workflow_type"] == "model_security_scan" and body["flow_run_id"], body
    done = wait_status(api, alice, body["workflow_id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    assert {s["id"]: s["status"] for s in done["steps"]}["scan_pickles"] == "cached"  # same files as onboarding
    scan = api.get(f"/api/v1/models/{model_id}/security-scan", headers=alice).json()
    assert scan["status"] == "SAFE" and scan["total_issues"] == 0 and "model.safetensors" in scan["scanned_files"]
    cloud = next(m["id"] for m in api.get("/api/v1/models", params={"type": "cloud"}, headers=alice).json()["data"])
    r = api.post("/api/v1/models/security-scan", headers=alice, json={
        "workflow_total_steps": 3, "step_number": 1, "trigger_workflow": True, "model_id": cloud})
    assert r.status_code == 422 and "no files" in r.text


def test_training_job_through_the_jobs_api(api, alice, tmp_path):
    import json as _json

    rows = [{"messages": [{"role": "user", "content": f"code {i}"}, {"role": "assistant", "content": f"part {i % 3}"}]}
            for i in range(24)]
    r = api.post("/api/v1/datasets/upload", headers=alice, data={"name": "codes"},
                 files={"file": ("codes.jsonl", "\n".join(_json.dumps(x) for x in rows).encode(), "application/jsonl")})
    dataset_id = r.json()["id"]
    deadline = time.monotonic() + 30
    while api.get(f"/api/v1/datasets/{dataset_id}", headers=alice).json()["status"] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    config = {"base_model": "tiny llama", "dataset_id": dataset_id, "algorithm": "lora", "rank": 4, "alpha": 8,
              "batch_size": 4, "max_steps": 4, "checkpoint_steps": 2, "logging_steps": 1, "learning_rate": 1e-3,
              "max_seq_length": 64, "provider": "local"}
    bad = api.post("/api/v1/jobs", headers=alice, json={"config": {**config, "learning_rate": 3.0}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_CONFIG"
    assert "learning_rate" in bad.text
    created = api.post("/api/v1/jobs", headers=alice, json={"config": config})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "pending" and job["estimated_duration_minutes"] is not None
    deadline = time.monotonic() + 240
    while (view := api.get(f"/api/v1/jobs/{job['job_id']}", headers=alice).json())["status"] not in (
            "completed", "failed"):
        assert time.monotonic() < deadline, view
        time.sleep(1)
    assert view["status"] == "completed", view
    assert view["progress"] == 1.0 and view["metrics"]["train_loss"] > 0
    assert view["artifact"]["hash"].startswith("sha256:") and view["artifact"]["size_bytes"] > 0
    assert view["adapter_id"] and view["model_id"]
    deadline = time.monotonic() + 30  # Prefect ships logs in batches: the last ones land after Completed
    while not any("step 4/4" in m["message"] for m in
                  api.get(f"/api/v1/jobs/{job['job_id']}/logs", params={"lines": 500}, headers=alice).json()["logs"]):
        assert time.monotonic() < deadline, "no training step in the job's logs"
        time.sleep(1)
    import torch

    if not torch.cuda.is_available():  # no gpu worker: the run went to the cpu pool and its logs say why
        messages = [m["message"] for m in api.get(f"/api/v1/jobs/{job['job_id']}/logs", params={"lines": 500},
                                                  headers=alice).json()["logs"]]
        assert any("no worker is online in the 'gpu' work pool" in m for m in messages), messages
    listed = api.get("/api/v1/jobs", params={"status": "completed"}, headers=alice).json()
    assert job["job_id"] in {j["job_id"] for j in listed["jobs"]}
    adapters = api.get("/api/v1/adapters", headers=alice).json()["data"]
    assert view["adapter_id"] in {a["id"] for a in adapters}
    model = api.get(f"/api/v1/models/{view['model_id']}", headers=alice).json()
    assert model["type"] == "fine-tuned" and model["parameters"]["adapter_type"] == "lora"


def sse_events(api, headers, path: str, last_event_id: int | None, stop_after: int | None) -> list[tuple[int, str]]:
    events: list[tuple[int, str]] = []
    extra = {"Accept": "text/event-stream", **({"Last-Event-ID": str(last_event_id)} if last_event_id else {})}
    with api.stream("GET", path, headers={**headers, **extra}, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        event_id = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: ") and event_id is not None:
                events.append((event_id, line[6:]))
                event_id = None
                if stop_after and len(events) >= stop_after:
                    break
            elif line.startswith("event: end"):
                break
    return events


def test_job_logs_stream_as_sse_and_resume_without_duplicates(api, alice):
    dataset_id = next(d["id"] for d in api.get("/api/v1/datasets", headers=alice).json()["data"] if d["name"] == "codes")
    config = {"base_model": "tiny llama", "dataset_id": dataset_id, "algorithm": "lora", "rank": 4, "alpha": 8,
              "batch_size": 2, "max_steps": 12, "checkpoint_steps": 6, "logging_steps": 1, "learning_rate": 1e-3,
              "max_seq_length": 64}
    job = api.post("/api/v1/jobs", headers=alice, json={"config": config}).json()
    path = f"/api/v1/jobs/{job['job_id']}/logs"
    first = sse_events(api, alice, path, None, stop_after=3)  # read while the run starts, then drop the line
    assert [i for i, _ in first] == [1, 2, 3]
    assert all(text.startswith("[") and "] [" in text for _, text in first)
    rest = sse_events(api, alice, path, last_event_id=first[-1][0], stop_after=None)
    ids = [i for i, _ in rest]
    assert ids == list(range(4, 4 + len(ids)))  # resumed right after the last seen line: nothing repeated
    assert any("step 12/12" in text for _, text in rest)
    assert api.get(f"/api/v1/jobs/{job['job_id']}", headers=alice).json()["status"] == "completed"

    pushed = api.post(path, headers=alice, json={"level": "warn", "message": "kernel says hello", "source": "kernel"})
    assert pushed.status_code == 201
    assert api.post(path, headers=alice, json={"level": "loud", "message": "x"}).status_code == 422
    deadline = time.monotonic() + 10
    while not any(line["message"] == "kernel says hello" and line["level"] == "WARNING"
                  for line in api.get(path, params={"limit": 20}, headers=alice).json()["logs"]):
        assert time.monotonic() < deadline
        time.sleep(0.5)


def codes_dataset(api, headers) -> str:
    return next(d["id"] for d in api.get("/api/v1/datasets", headers=headers).json()["data"] if d["name"] == "codes")


def test_job_websocket_sends_status_metrics_and_logs(api, alice, stack):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    config = {"base_model": "tiny llama", "dataset_id": codes_dataset(api, alice), "algorithm": "dora", "rank": 4,
              "alpha": 8, "batch_size": 2, "max_steps": 6, "checkpoint_steps": 3, "logging_steps": 1,
              "learning_rate": 1e-3, "max_seq_length": 64}
    job = api.post("/api/v1/jobs", headers=alice, json={"config": config}).json()
    url = stack.api_url.replace("http://", "ws://") + f"/ws/jobs/{job['job_id']}"
    with pytest.raises(InvalidStatus):
        connect(url, additional_headers={"Authorization": "Bearer nonsense"}, open_timeout=10)
    received: list[dict] = []
    with connect(url, additional_headers=alice, open_timeout=10) as ws:
        for raw in ws:  # the server closes the socket once the job has finished
            received.append(__import__("json").loads(raw))
    assert all(m["job_id"] == job["job_id"] and m["timestamp"] for m in received)
    statuses = [m["status"] for m in received if m["type"] == "status"]
    assert statuses[-1] == "completed" and "running" in statuses
    metrics = [m["metrics"] for m in received if m["type"] == "metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    logs = [(m["timestamp"], m["message"]) for m in received if m["type"] == "log"]
    assert len(logs) == len(set(logs))  # every line once, though processes ship their logs out of order
    assert all({"loss", "learning_rate", "epoch"} <= set(m) for m in metrics)
    assert any(m["type"] == "log" and m["message"].startswith("registered adapter") for m in received)


def flow_run_processes(flow_run_id: str) -> list[int]:
    """PIDs of the processes the worker started for a flow run (found by their PREFECT__FLOW_RUN_ID)."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ.read_bytes():
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


def test_killed_training_resumes_from_its_last_checkpoint(api, alice):
    import signal

    from weft.storage import get_storage
    from weft.training.checkpoints import CheckpointStore
    from weft.training.progress import parse_line

    total = 300
    config = {"base_model": "tiny llama", "dataset_id": codes_dataset(api, alice), "algorithm": "lora", "rank": 4,
              "alpha": 8, "batch_size": 2, "max_steps": total, "checkpoint_steps": 10, "logging_steps": 1,
              "learning_rate": 1e-3, "max_seq_length": 64}
    job = api.post("/api/v1/jobs", headers=alice, json={"config": config}).json()
    store = CheckpointStore(get_storage(), f"runs/{job['job_id']}/checkpoints")
    deadline = time.monotonic() + 180
    while not store.steps():
        assert time.monotonic() < deadline, api.get(f"/api/v1/jobs/{job['job_id']}", headers=alice).json()
        time.sleep(0.05)
    pids = flow_run_processes(job["flow_run_id"])
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_status(api, alice, job["job_id"], {"FAILED"})
    last = store.steps()[-1]
    assert 0 < last < total

    retried = api.post(f"/api/v1/workflows/{job['job_id']}/retry", headers=alice)
    assert retried.status_code == 200, retried.text
    view = wait_status(api, alice, job["job_id"], {"COMPLETED", "FAILED"}, timeout=300)
    assert view["status"] == "COMPLETED", view
    stages = {s["id"]: s["status"] for s in view["steps"]}
    assert stages["prepare_dataset"] == "cached" and stages["train_adapter"] == "completed"
    job_view = api.get(f"/api/v1/jobs/{job['job_id']}", headers=alice).json()
    assert job_view["metrics"]["resumed_from_step"] == last and job_view["metrics"]["global_step"] == total

    deadline = time.monotonic() + 30  # the resumed run's logs: its first training step follows the checkpoint
    while True:
        lines = [line["message"] for line in api.get(f"/api/v1/jobs/{job['job_id']}/logs", params={"lines": 2000},
                                                     headers=alice).json()["logs"]]
        steps = [m["step"] for line in lines if (m := parse_line(line))]
        if steps and steps[-1] == total:
            break
        assert time.monotonic() < deadline, steps[-5:]
        time.sleep(1)
    assert any(f"resuming from checkpoint-{last}" in line for line in lines)
    assert steps[0] == last + 1 and steps == list(range(last + 1, total + 1))


def test_document_000_workflow_create_start_with_a_dataset_path(api, alice, bob, tmp_path):
    import json as _json

    data = tmp_path / "maintenance.jsonl"
    data.write_text("\n".join(_json.dumps({"instruction": f"service code {i}?", "output": f"SC-{i % 4}"})
                              for i in range(20)))
    body = {"name": "Service Advisor", "description": "codes", "workflow_type": "fine-tuning",
            "config": {"task": "vertical-tune", "model": {"name": "tiny llama", "revision": "main"},
                       "dataset": {"primary": str(data), "validation_split": 0.0},
                       "fine_tuning": {"method": "LoRA", "parameters": {
                           "epochs": 1, "learning_rate": 1e-3, "rank": 4, "alpha": 8, "batch_size": 4,
                           "max_seq_length": 64, "logging_steps": 1}}}}
    before = step_rows()
    for bad in ({**body, "workflow_type": "knitting"},
                {**body, "config": {**body["config"], "dataset": {"primary": "/etc/passwd.jsonl"}}},
                {**body, "config": {**body["config"], "fine_tuning": {"method": "QLoRA", "parameters": {
                    "learning_rate": 5.0}}}}):
        r = api.post("/api/v1/workflows", headers=alice, json=bad)
        assert 400 <= r.status_code < 500 and "error" in r.json(), r.text
    assert step_rows() == before  # a refused create stores nothing, not even its first step

    created = api.post("/api/v1/workflows", headers=alice, json=body)
    assert created.status_code == 201, created.text
    wf = created.json()
    assert (wf["name"], wf["workflow_type"], wf["status"]) == ("Service Advisor", "fine-tuning", "pending")
    assert api.post(f"/api/v1/workflows/{wf['id']}/start", headers=bob).status_code == 404
    started = api.post(f"/api/v1/workflows/{wf['id']}/start", headers=alice)
    assert started.status_code == 200, started.text
    again = api.post(f"/api/v1/workflows/{wf['id']}/start", headers=alice).json()
    assert again["flow_run_id"] == started.json()["flow_run_id"]  # starting twice is one run
    view = wait_status(api, alice, wf["id"], {"COMPLETED", "FAILED"}, timeout=240)
    assert view["status"] == "COMPLETED", view
    job = api.get(f"/api/v1/jobs/{wf['id']}", headers=alice).json()
    assert job["config"]["num_epochs"] == 1 and job["metrics"]["global_step"] == 5  # 20 records / batch 4
    dataset = api.get(f"/api/v1/datasets/{job['config']['dataset_id']}", headers=alice).json()
    assert dataset["status"] == "ready" and dataset["record_count"] == 20
    listed = api.get("/api/v1/workflows", headers=alice).json()["data"]
    assert next(w for w in listed if w["id"] == wf["id"])["name"] == "Service Advisor"


def test_evaluation_through_the_api(api, alice, bob, tmp_path):
    import json as _json

    from tests.helpers.records import mapping_records

    train, test = tmp_path / "mapping-train.jsonl", tmp_path / "mapping-test.jsonl"
    train.write_text("\n".join(_json.dumps(r) for r in mapping_records(96)))
    test.write_text("\n".join(_json.dumps(r) for r in mapping_records(24)))
    config = {"base_model": "tiny llama", "dataset_path": str(train), "algorithm": "lora", "rank": 8, "alpha": 16,
              "batch_size": 8, "max_steps": 60, "checkpoint_steps": 60, "learning_rate": 1e-2, "max_seq_length": 64}
    job = api.post("/api/v1/jobs", headers=alice, json={"config": config}).json()
    assert wait_status(api, alice, job["job_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] == "COMPLETED"
    model_id = api.get(f"/api/v1/jobs/{job['job_id']}", headers=alice).json()["model_id"]

    path = f"/api/v1/models/{model_id}/evaluate"
    assert api.post(path, headers=bob, json={"test_set_path": str(test)}).status_code == 404
    assert api.post(path, headers=alice, json={}).status_code == 422
    assert api.post(path, headers=alice, json={"test_set_path": "/nope/test.jsonl"}).status_code == 422
    created = api.post(path, headers=alice, json={"test_set_path": str(test), "base_model_name": "tiny llama",
                                                  "max_new_tokens": 8, "benchmarks": []})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "pending" and body["message"] == "Evaluation job created"
    evaluation_id = body["evaluation_id"]
    view = wait_status(api, alice, evaluation_id, {"COMPLETED", "FAILED"}, timeout=300)
    assert view["status"] == "COMPLETED", view
    ev = api.get(f"/api/v1/evaluations/{evaluation_id}", headers=alice).json()
    assert ev["status"] == "completed" and ev["model_id"] == model_id and ev["test_set_path"] == str(test)
    assert set(ev["results"]) >= {"base_model", "fine_tuned", "improvement"}
    assert ev["results"]["fine_tuned"]["accuracy"] > ev["results"]["base_model"]["accuracy"]
    assert len(ev["examples"]) == 24 and ev["examples"][0]["winner"] in ("fine_tuned", "base_model", "tie")
    assert ev["promoted"] is True and api.get(f"/api/v1/models/{model_id}", headers=alice).status_code == 200

    listed = api.get("/api/v1/evaluations", headers=alice, params={"model_id": model_id, "status": "completed"}).json()
    assert [e["id"] for e in listed["data"]] == [evaluation_id] and listed["total"] == 1 and listed["page"] == 1
    assert api.get("/api/v1/evaluations", headers=bob).json()["total"] == 0
    assert api.get(f"/api/v1/evaluations/{evaluation_id}", headers=bob).status_code == 404

    put = api.put(f"/api/v1/evaluations/{evaluation_id}", headers=alice,
                  json={"results": {**ev["results"], "note": {"reviewed": True}}})
    assert put.status_code == 200 and put.json()["results"]["note"] == {"reviewed": True}

    compared = api.post("/api/v1/experiments/compare", headers=alice,
                        json={"experiment_ids": [job["job_id"], evaluation_id]}).json()["comparison"]
    assert compared["metrics"]["loss"][0] > 0 and compared["metrics"]["loss"][1] is None
    assert compared["metrics"]["accuracy"][1] == ev["results"]["fine_tuned"]["accuracy"]
    assert compared["best_performer"] == evaluation_id
