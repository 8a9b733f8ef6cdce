"""A GPU cloud on the real stack: connect it (against a stand-in of its API), start a worker on its pool,
and a job that names its resource runs there; its cost is the measured run time at the configured price.
A local job beside it is priced at its pool's rate, and comparing the two reports both costs."""

from __future__ import annotations

import json
import math
import sys
import time
from uuid import UUID

import pytest

from tests.helpers.e2e import onboard_from_disk, register
from tests.helpers.gpu_cloud import GpuCloudStandIn
from tests.helpers.records import mapping_records
from weft.net import free_port

pytestmark = pytest.mark.e2e
KEY = "rp-e2e-key"
CLOUD_PORT = free_port()
PRICE = 36.0  # USD per hour: 1 cent per second
CPU_RATE = 0.05
STACK_SETTINGS = {"platform_urls": {"runpod": f"http://127.0.0.1:{CLOUD_PORT}/v1"},
                  "resource_prices": {"runpod/gpu-rtx4090": PRICE}, "pool_hour_cost": {"cpu": CPU_RATE, "gpu": 2.5}}


@pytest.fixture(scope="module")
def cloud():
    with GpuCloudStandIn(KEY, CLOUD_PORT) as stand_in:
        yield stand_in


def wait_job(api, headers, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while (job := api.get(f"/api/v1/jobs/{job_id}", headers=headers).json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(1)
    return job


def test_a_job_runs_on_the_connected_clouds_pool_and_is_billed(api, stack, cloud, tiny_model_dir):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    grace = register(api, "grace")
    connected = api.post("/api/v1/platforms/runpod/connect", headers=grace, json={"credentials": {"api_key": KEY}})
    assert connected.status_code == 200, connected.text
    stack.spawn("worker-runpod", [sys.executable, "-m", "weft.cli", "worker", "--pool", "runpod"])

    base = onboard_from_disk(api, grace, tiny_model_dir, "tiny priced")
    records = "\n".join(json.dumps(r) for r in mapping_records(16)).encode()
    dataset = api.post("/api/v1/datasets/upload", headers=grace, data={"name": "priced labels"},
                       files={"file": ("labels.jsonl", records, "application/jsonl")}).json()
    config = {"base_model": base, "dataset_id": dataset["id"], "algorithm": "lora", "rank": 4, "alpha": 8,
              "batch_size": 4, "max_steps": 6, "learning_rate": 5e-3, "max_seq_length": 64}
    on_cloud = api.post("/api/v1/jobs", headers=grace, json={"config": {**config, "provider": "runpod",
                                                                        "resource_id": "gpu-rtx4090"}})
    local = api.post("/api/v1/jobs", headers=grace, json={"config": config})
    assert on_cloud.status_code == 201 and local.status_code == 201, (on_cloud.text, local.text)
    created = on_cloud.json()
    assert created["provider"] == "runpod" and created["estimated_cost"] == round(
        math.ceil(created["estimated_duration_minutes"]) * 60 / 3600 * PRICE, 4)

    jobs = [wait_job(api, grace, created["job_id"]), wait_job(api, grace, local.json()["job_id"])]
    assert [job["status"] for job in jobs] == ["completed", "completed"], jobs
    with temporary_settings({PREFECT_API_URL: stack.settings.prefect_api}), get_client(sync_client=True) as client:
        runs = [client.read_flow_run(UUID(job["flow_run_id"])) for job in jobs]
    assert [run.work_pool_name for run in runs] == ["runpod", "cpu"]
    seconds = [run.total_run_time.total_seconds() for run in runs]
    assert [job["duration_seconds"] for job in jobs] == seconds
    assert jobs[0]["cost"] == round(math.ceil(seconds[0] / 60) * 60 / 3600 * PRICE, 4)
    assert jobs[1]["cost"] == round(math.ceil(seconds[1]) / 3600 * CPU_RATE, 4)  # a local pool bills by the second

    resources = {r["id"]: r for r in api.get("/api/v1/resources", headers=grace).json()["resources"]}
    assert resources["local-cpu"]["available"] is True and resources["local-cpu"]["pricing"]["hourly_rate"] == CPU_RATE
    assert resources["gpu-rtx4090"]["available"] is False  # its worker is online, but has no RTX 4090

    compared = api.post("/api/v1/experiments/compare", headers=grace,
                        json={"experiment_ids": [job["job_id"] for job in jobs]})
    assert compared.status_code == 200, compared.text
    assert compared.json()["comparison"]["cost_analysis"] == {"total_costs": [jobs[0]["cost"], jobs[1]["cost"]],
                                                             "cost_per_accuracy_point": [None, None]}
    assert api.delete("/api/v1/platforms/runpod", headers=grace).status_code == 200
