"""Models leave the platform, on the real stack: fine-tune the tiny model with an export in its job config → the
GGUF (q8_0) is written and verified → document 002's `requests` code downloads the ZIP → `unzip -l` shows the
layout, README.md and metrics.json hold the job's numbers → the GGUF from the ZIP reloads in transformers and
answers a trained prompt as base + adapter does. A merged export; an uploaded adapter served through a
deployment; the API's memory while it streams a ZIP of a 500 MB model. And a job on a connected GPU cloud's pool
(its API a stand-in), billed at the resource's price for its measured run time."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import requests
from sqlmodel import select

from tests.helpers.e2e import onboard_from_disk, register, wait_status
from tests.helpers.gpu_cloud import GpuCloudStandIn
from tests.helpers.records import mapping_records
from weft.db import session_scope
from weft.net import free_port
from weft.storage import get_storage
from weft.tables import Model, User
from weft.testing.adapters import build_adapter

pytestmark = pytest.mark.e2e
TRAINED_PROMPT = "replace the brake pads (0)"
MB = 2**20
CLOUD_KEY = "rp-e2e-key"
CLOUD_PORT = free_port()
PRICE = 36.0  # USD per hour: 1 cent per second
STACK_SETTINGS = {"platform_urls": {"runpod": f"http://127.0.0.1:{CLOUD_PORT}/v1"},
                  "resource_prices": {"runpod/gpu-rtx4090": PRICE}}


@pytest.fixture(scope="module")
def frank(api) -> dict[str, str]:
    return register(api, "frank")


@pytest.fixture(scope="module")
def base_id(api, frank, tiny_model_dir: Path) -> str:
    return onboard_from_disk(api, frank, tiny_model_dir, "tiny export")


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(1)
    return value


@pytest.fixture(scope="module")
def tuned(api, frank, base_id) -> dict:
    """A LoRA fine-tune whose job config asks for a q8_0 GGUF export; returns the job view once exported."""
    records = "\n".join(json.dumps(r) for r in mapping_records(24)).encode()
    dataset = api.post("/api/v1/datasets/upload", headers=frank, data={"name": "service labels"},
                       files={"file": ("labels.jsonl", records, "application/jsonl")}).json()
    config = {"base_model": base_id, "dataset_id": dataset["id"], "algorithm": "lora", "rank": 4, "alpha": 8,
              "batch_size": 4, "max_steps": 12, "learning_rate": 5e-3, "max_seq_length": 64, "logging_steps": 4,
              "name": "advisor", "export": {"format": "gguf", "quantization": "q8_0", "prompt": TRAINED_PROMPT}}
    created = api.post("/api/v1/jobs", headers=frank, json={"config": config})
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    job = wait_for(lambda: (v := api.get(f"/api/v1/jobs/{job_id}", headers=frank).json())["status"] in
                   ("completed", "failed") and v, 300, "the fine-tune")
    assert job["status"] == "completed", job
    model = wait_for(lambda: (m := api.get(f"/api/v1/models/{job['model_id']}", headers=frank).json())["details"]
                     .get("exports", {}).get("gguf") and m, 300, "the export started by the job")
    return {"job": job, "model": model}


def test_fine_tune_export_download_and_reload(api, frank, tuned, tmp_path):
    job, model = tuned["job"], tuned["model"]
    export = model["details"]["exports"]["gguf"]
    assert export["quantization"] == "q8_0" and export["verification"]["argmax_equal"] is True
    assert export["max_abs_logit_delta"] < 1.0 and export["adapter_check"]["greedy_equal"] is True
    assert model["job"]["id"] == job["job_id"] and model["training_metrics"]["train_loss"] > 0
    assert set(model["download_links"]) >= {"lora_adapters", "gguf"}
    assert "gguf/model-q8_0.gguf" in model["files"]

    # document 002's download code, with the token this API asks for
    def download_model(model_id, output_file="model.zip"):
        url = f"{api.base_url}/api/v1/models/{model_id}/download"
        with requests.get(url, stream=True, headers=frank) as response:
            response.raise_for_status()
            with open(output_file, "wb") as f:
                for chunk in response.iter_content(chunk_size=8192):
                    f.write(chunk)

    archive = tmp_path / "model.zip"
    download_model(model["id"], archive)
    listing = subprocess.run(["unzip", "-l", str(archive)], capture_output=True, text=True, check=True).stdout
    root = model["id"]
    for name in ("lora_adapters/adapter_config.json", "lora_adapters/adapter_model.safetensors",
                 "gguf/model-q8_0.gguf", "metrics.json", "README.md"):
        assert f"{root}/{name}" in listing, listing
    with zipfile.ZipFile(archive) as z:
        metrics = json.loads(z.read(f"{root}/metrics.json"))
        card = z.read(f"{root}/README.md").decode()
        z.extractall(tmp_path / "unzipped")
    assert metrics["training"] == job["metrics"] and metrics["exports"]["gguf"]["quantization"] == "q8_0"
    assert "library_name: peft" in card and f"{job['metrics']['train_loss']:.6g}" in card

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with get_storage().local(f"models/{model['details']['base_model_id']}") as base_dir:
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        adapted = PeftModel.from_pretrained(base, tmp_path / "unzipped" / root / "lora_adapters").eval()
    gguf = AutoModelForCausalLM.from_pretrained(tmp_path / "unzipped" / root / "gguf", gguf_file="model-q8_0.gguf",
                                                dtype=torch.float32).eval()
    ids = tokenizer(TRAINED_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(adapted(ids).logits.argmax(-1), gguf(ids).logits.argmax(-1))
        with adapted.disable_adapter():  # the base alone answers otherwise: the adapter is in the GGUF
            assert not torch.allclose(adapted(ids).logits, gguf(ids).logits, atol=1e-3)


def test_merged_export(api, frank, tuned):
    model_id = tuned["model"]["id"]
    r = api.post(f"/api/v1/models/{model_id}/export", headers=frank, json={"format": "merged"})
    assert r.status_code == 202, r.text
    assert wait_status(api, frank, r.json()["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] \
        == "COMPLETED"
    model = api.get(f"/api/v1/models/{model_id}", headers=frank).json()
    assert model["merged_path"] and "merged/model.safetensors" in model["files"]
    assert api.post(f"/api/v1/models/{model_id}/export", headers=frank,
                    json={"format": "gguf", "quantization": "q4_k_m"}).status_code == 422  # no llama-quantize here


def test_uploaded_adapter_serves_through_a_deployment(api, frank, base_id, tiny_model_dir, tmp_path):
    folder = build_adapter(tiny_model_dir, tmp_path / "adapter", seed=3)
    meta = {"base_model": base_id, "rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
            "name": "uploaded"}
    with (folder / "adapter_model.safetensors").open("rb") as f:
        r = api.post("/api/v1/adapters/upload", headers=frank, data={"metadata": json.dumps(meta)},
                     files={"file": ("adapter_model.safetensors", f, "application/octet-stream")})
    assert r.status_code == 201, r.text
    uploaded = r.json()
    assert uploaded["adapter_id"] in {a["id"] for a in api.get("/api/v1/adapters", headers=frank).json()["adapters"]}
    deployed = api.post(f"/api/v1/models/{uploaded['model_id']}/deploy", headers=frank,
                        json={"endpoint_name": "Uploaded Adapter", "instance_count": 1})
    assert deployed.status_code == 202, deployed.text
    assert wait_status(api, frank, deployed.json()["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] \
        == "COMPLETED"
    try:
        answer = api.post("/v1/chat/completions", headers=frank, json={
            "model": "uploaded-adapter", "messages": [{"role": "user", "content": "check the oil level"}],
            "max_tokens": 4, "temperature": 0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] is not None
    finally:
        assert api.delete(f"/api/v1/deployments/{deployed.json()['id']}", headers=frank).status_code == 200


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_500_mb_zip_streams_in_constant_memory(api, frank, stack):
    """A registered model whose weights are one 500 MB file: the API's RSS while it streams the ZIP."""
    storage = get_storage()
    with session_scope() as s:
        user = s.exec(select(User).where(User.username == "frank")).one()
        model = Model(user_id=user.id, name="big", provider_type="disk")
        path = storage.local_path(f"models/{model.id}/model.safetensors")
        path.parent.mkdir(parents=True)
        with path.open("wb") as f:
            f.truncate(500 * MB)  # sparse: read back as zeros
        model.storage_uri = storage.url(f"models/{model.id}")
        s.add(model)
    pid = stack.pid("api")
    idle = rss_mb(pid)
    peak, done = [idle], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size, tail = 0, b""
    try:
        with httpx.stream("GET", f"{api.base_url}/api/v1/models/{model.id}/download", headers=frank,
                          timeout=120) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes(1 << 20):
                size += len(chunk)
                tail = (tail + chunk)[-256:]
    finally:
        done.set()
        sampler.join()
    assert size > 500 * MB and b"PK\x05\x06" in tail  # the whole archive, up to its end record
    print(f"API RSS while streaming a {size / MB:.0f} MB ZIP: idle {idle:.0f} MB, peak {max(peak):.0f} MB")
    assert max(peak) - idle < 100


@pytest.fixture(scope="module")
def cloud():
    with GpuCloudStandIn(CLOUD_KEY, CLOUD_PORT) as stand_in:
        yield stand_in


def test_a_job_runs_on_the_connected_clouds_pool_and_is_billed(api, stack, cloud, frank, base_id):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    cpu_rate = stack.settings.pool_hour_cost["cpu"]
    connected = api.post("/api/v1/platforms/runpod/connect", headers=frank, json={"credentials": {"api_key": CLOUD_KEY}})
    assert connected.status_code == 200, connected.text
    stack.spawn("worker-runpod", [sys.executable, "-m", "weft.cli", "worker", "--pool", "runpod"])

    records = "\n".join(json.dumps(r) for r in mapping_records(16)).encode()
    dataset = api.post("/api/v1/datasets/upload", headers=frank, data={"name": "priced labels"},
                       files={"file": ("labels.jsonl", records, "application/jsonl")}).json()
    config = {"base_model": base_id, "dataset_id": dataset["id"], "algorithm": "lora", "rank": 4, "alpha": 8,
              "batch_size": 4, "max_steps": 6, "learning_rate": 5e-3, "max_seq_length": 64}
    on_cloud = api.post("/api/v1/jobs", headers=frank, json={"config": {**config, "provider": "runpod",
                                                                        "resource_id": "gpu-rtx4090"}})
    local = api.post("/api/v1/jobs", headers=frank, json={"config": config})
    assert on_cloud.status_code == 201 and local.status_code == 201, (on_cloud.text, local.text)
    created = on_cloud.json()
    assert created["provider"] == "runpod" and created["estimated_cost"] == round(
        math.ceil(created["estimated_duration_minutes"]) * 60 / 3600 * PRICE, 4)

    jobs = [wait_for(lambda i=job_id: (v := api.get(f"/api/v1/jobs/{i}", headers=frank).json())["status"] in
                     ("completed", "failed") and v, 300, f"job {job_id}")
            for job_id in (created["job_id"], local.json()["job_id"])]
    assert [job["status"] for job in jobs] == ["completed", "completed"], jobs
    with temporary_settings({PREFECT_API_URL: stack.settings.prefect_api}), get_client(sync_client=True) as client:
        runs = [client.read_flow_run(UUID(job["flow_run_id"])) for job in jobs]
    assert [run.work_pool_name for run in runs] == ["runpod", "cpu"]
    seconds = [run.total_run_time.total_seconds() for run in runs]
    assert [job["duration_seconds"] for job in jobs] == seconds
    assert jobs[0]["cost"] == round(math.ceil(seconds[0] / 60) * 60 / 3600 * PRICE, 4)
    assert jobs[1]["cost"] == round(math.ceil(seconds[1]) / 3600 * cpu_rate, 4)  # a local pool bills by the second

    resources = {r["id"]: r for r in api.get("/api/v1/resources", headers=frank).json()["resources"]}
    assert resources["local-cpu"]["available"] is True and resources["local-cpu"]["pricing"]["hourly_rate"] == cpu_rate
    assert resources["gpu-rtx4090"]["available"] is False  # its worker is online, but has no RTX 4090

    compared = api.post("/api/v1/experiments/compare", headers=frank,
                        json={"experiment_ids": [job["job_id"] for job in jobs]})
    assert compared.status_code == 200, compared.text
    assert compared.json()["comparison"]["cost_analysis"] == {"total_costs": [jobs[0]["cost"], jobs[1]["cost"]],
                                                             "cost_per_accuracy_point": [None, None]}
    assert api.delete("/api/v1/platforms/runpod", headers=frank).status_code == 200
