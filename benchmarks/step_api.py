"""Step-API latency and trigger-to-running latency on the embedded platform.

Starts the same stack as `make run` (Prefect server, cpu worker, API) in a temporary WEFT_HOME,
then prints:
  * latency of a step post (document 004, step 1) at 20 concurrent clients: median / p99, against
    an authenticated `GET /api/v1/auth/me` at the same concurrency (the baseline);
  * trigger-to-running of the add_cloud_model flow (the trivial one: no download) through the step
    API, against `run_deployment` called directly on the same deployment.

Usage: .venv/bin/python benchmarks/step_api.py [--clients 20] [--requests 400] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform as host
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
OPENAI = "6f1b5a3e-0a0b-4c59-9d0e-000000000001"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed_calls(fn, clients: int, total: int) -> list[float]:
    def one(_):
        t0 = time.perf_counter()
        r = fn()
        assert r.status_code < 300, r.text
        return (time.perf_counter() - t0) * 1000

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(total)))


def running_at(prefect_api: str, flow_run_id: str, timeout: float = 120) -> datetime:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = httpx.get(f"{prefect_api}/flow_run_states/", params={"flow_run_id": flow_run_id}).json()
        for s in states:
            if s["type"] == "RUNNING":
                return datetime.fromisoformat(s["timestamp"])
        time.sleep(0.1)
    raise TimeoutError(f"flow run {flow_run_id} never ran")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    os.environ["WEFT_HOME"] = tempfile.mkdtemp(prefix="weft-bench-")
    os.environ["WEFT_RATE_LIMIT_PER_MINUTE"] = "1000000"  # measure the API, not the limiter's 429s
    from weft.net import free_port
    from weft.platform import Platform
    from weft.settings import Settings

    stack = Platform(settings=Settings(api_port=free_port(), prefect_port=free_port()))
    print(f"machine: {host.machine()} {os.cpu_count()} cores, {host.python_implementation()} {host.python_version()}")
    t0 = time.perf_counter()
    stack.start()
    print(f"platform start (server, deployments, worker, API): {time.perf_counter() - t0:.1f} s")
    try:
        api = httpx.Client(base_url=stack.api_url, timeout=60, limits=httpx.Limits(max_connections=args.clients))
        token = api.post("/api/v1/auth/register", json={"email": "bench@example.com", "username": "bench",
                                                          "password": "benchmark-password"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        step1 = {"workflow_total_steps": 6, "step_number": 1, "trigger_workflow": False, "modality": "llm"}

        base = timed_calls(lambda: api.get("/api/v1/auth/me", headers=headers), args.clients, args.requests)
        step = timed_calls(lambda: api.post("/api/v1/models/local-model-workflow", json=step1, headers=headers),
                           args.clients, args.requests)
        print(f"\nstep post at {args.clients} concurrent clients ({args.requests} requests):")
        print(f"  step post   median {statistics.median(step):7.1f} ms   p99 {percentile(step, 0.99):7.1f} ms")
        print(f"  GET /me     median {statistics.median(base):7.1f} ms   p99 {percentile(base, 0.99):7.1f} ms  (baseline)")
        print(f"  ratio       median {statistics.median(step) / statistics.median(base):.2f}x")

        via_api, direct = [], []
        owner_id = api.get("/api/v1/auth/me", headers=headers).json()["id"]
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        for i in range(args.runs):
            wid = None
            for body in ({"workflow_total_steps": 4, "step_number": 1, "provider_type": "cloud_model"},
                         {"step_number": 2, "provider_id": OPENAI}, {"step_number": 3, "cloud_model_id": None}):
                wid = api.post("/api/v1/models/cloud-model-workflow", json={**body, **({"workflow_id": wid} if wid else {})},
                               headers=headers).json()["workflow_id"]
            t_trigger = datetime.now().astimezone()
            r = api.post("/api/v1/models/cloud-model-workflow", headers=headers, json={
                "workflow_id": wid, "step_number": 4, "name": f"bench-{i}", "uri": f"openai/bench-{i}",
                "modality": "llm", "trigger_workflow": True}).json()
            via_api.append((running_at(stack.settings.prefect_api, r["flow_run_id"]) - t_trigger).total_seconds())

            with temporary_settings({PREFECT_API_URL: stack.settings.prefect_api}):
                t_trigger = datetime.now().astimezone()
                fr = run_deployment("add_cloud_model/default", timeout=0, as_subflow=False, parameters={
                    "spec": {"provider_type": "cloud_model", "provider_id": OPENAI, "name": f"direct-{i}",
                             "uri": f"openai/direct-{i}", "modality": "llm"},
                    "owner_id": owner_id})
            direct.append((running_at(stack.settings.prefect_api, str(fr.id)) - t_trigger).total_seconds())
        print(f"\ntrigger -> RUNNING of add_cloud_model ({args.runs} runs, worker polling every "
              f"{stack.settings.worker_query_seconds:g} s):")
        print(f"  via step API        median {statistics.median(via_api):5.2f} s   max {max(via_api):5.2f} s")
        print(f"  run_deployment      median {statistics.median(direct):5.2f} s   max {max(direct):5.2f} s  (baseline)")
        print(f"  ratio               median {statistics.median(via_api) / statistics.median(direct):.2f}x")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
