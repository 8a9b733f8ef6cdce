"""Step-API latency and trigger-to-running latency on the embedded platform.

Starts the same stack as `make run` (Prefect server, cpu worker, API) in a temporary WEFT_HOME,
then prints:
  * latency of a step post (document 004, step 1) at 20 concurrent clients: median / p99, against
    an authenticated `GET /api/v1/auth/me` at the same concurrency (the baseline);
  * trigger-to-running of the add_cloud_model flow (the trivial one: no download; the cpu-light
    worker) through the step API, against `run_deployment` called directly on the same deployment;
    each run `--gap` seconds after the previous one ended (benchmarks/trigger_latency.py splits it
    into phases and compares it with a plain process worker).

`--profile production` runs the same on the production profile: a throwaway PostgreSQL (weft's and
Prefect's databases) and SeaweedFS S3 server (weft.testing.services), 2 API processes (the clients
alternate between them, as behind a load balancer) and 2 workers.

Usage: .venv/bin/python benchmarks/step_api.py [--profile embedded|production] [--clients 20]
       [--requests 400] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform as host
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
OPENAI = "6f1b5a3e-0a0b-4c59-9d0e-000000000001"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed_calls(fn, clients: int, total: int) -> tuple[list[float], float]:
    """Latencies in ms of `total` calls `fn(i)` from `clients` threads, and the calls per second."""
    def one(i):
        t0 = time.perf_counter()
        r = fn(i)
        assert r.status_code < 300, r.text
        return (time.perf_counter() - t0) * 1000

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(total)))
    return latencies, total / (time.perf_counter() - start)


def production_settings(services: ExitStack, **ports) -> dict:
    """Settings of the production profile on a throwaway PostgreSQL and S3 server."""
    from weft.testing.services import PostgresServer, SeaweedS3

    pg = services.enter_context(PostgresServer())
    s3 = services.enter_context(SeaweedS3())
    pg.create_database("weft")
    pg.create_database("prefect")
    return {"database_url": pg.url("weft"), "prefect_database_url": pg.url("prefect", driver="asyncpg"),
            "storage_url": f"{s3.make_bucket('weft')}/weft", "storage_options": s3.storage_options,
            "workers": 2, "api_processes": 2}


def running_at(prefect_api: str, flow_run_id: str, timeout: float = 120) -> datetime:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = httpx.get(f"{prefect_api}/flow_run_states/", params={"flow_run_id": flow_run_id}).json()
        for s in states:
            if s["type"] == "RUNNING":
                return datetime.fromisoformat(s["timestamp"])
        time.sleep(0.1)
    raise TimeoutError(f"flow run {flow_run_id} never ran")


def settle(prefect_api: str, flow_run_id: str, gap: float, timeout: float = 120) -> None:
    """Wait for the run to end, then `gap` seconds (the light worker readies its next warm process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{prefect_api}/flow_runs/{flow_run_id}").json()["state"]["type"] in TERMINAL:
            break
        time.sleep(0.2)
    time.sleep(gap)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gap", type=float, default=6.0, help="seconds between a run's end and the next trigger")
    parser.add_argument("--profile", choices=["embedded", "production"], default="embedded")
    args = parser.parse_args()

    os.environ["WEFT_HOME"] = tempfile.mkdtemp(prefix="weft-bench-")
    os.environ["WEFT_RATE_LIMIT_PER_MINUTE"] = "1000000"  # measure the API, not the limiter's 429s
    from weft.net import free_port, free_port_run
    from weft.platform import Platform
    from weft.settings import Settings

    services = ExitStack()
    extra = production_settings(services) if args.profile == "production" else {}
    api_port = free_port_run(extra.get("api_processes", 1))
    stack = Platform(settings=Settings(api_port=api_port, prefect_port=free_port(), **extra), profile=args.profile)
    print(f"machine: {host.machine()} {os.cpu_count()} cores, {host.python_implementation()} {host.python_version()}")
    print(f"profile: {args.profile} (database {stack.settings.db_url.split(':')[0]}, storage "
          f"{stack.settings.storage_root.split(':')[0]}, {stack.settings.api_processes} API process(es))")
    t0 = time.perf_counter()
    try:
        stack.start()
        print(f"platform start (server, deployments, worker, API): {time.perf_counter() - t0:.1f} s")
        apis = [httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=args.clients))
                for url in stack.api_urls]
        api = apis[0]
        token = api.post("/api/v1/auth/register", json={"email": "bench@example.com", "username": "bench",
                                                          "password": "benchmark-password"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        step1 = {"workflow_total_steps": 6, "step_number": 1, "trigger_workflow": False, "modality": "llm"}

        base, base_rate = timed_calls(lambda i: apis[i % len(apis)].get("/api/v1/auth/me", headers=headers),
                                      args.clients, args.requests)
        step, step_rate = timed_calls(lambda i: apis[i % len(apis)].post("/api/v1/models/local-model-workflow",
                                                                         json=step1, headers=headers),
                                      args.clients, args.requests)
        print(f"\nstep post at {args.clients} concurrent clients ({args.requests} requests):")
        print(f"  step post   median {statistics.median(step):7.1f} ms   p99 {percentile(step, 0.99):7.1f} ms"
              f"   {step_rate:6.1f} requests/s")
        print(f"  GET /me     median {statistics.median(base):7.1f} ms   p99 {percentile(base, 0.99):7.1f} ms"
              f"   {base_rate:6.1f} requests/s  (baseline)")
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
            settle(stack.settings.prefect_api, r["flow_run_id"], args.gap)

            with temporary_settings({PREFECT_API_URL: stack.settings.prefect_api}):
                t_trigger = datetime.now().astimezone()
                fr = run_deployment("add_cloud_model/default", timeout=0, as_subflow=False, parameters={
                    "spec": {"provider_type": "cloud_model", "provider_id": OPENAI, "name": f"direct-{i}",
                             "uri": f"openai/direct-{i}", "modality": "llm"},
                    "owner_id": owner_id})
            direct.append((running_at(stack.settings.prefect_api, str(fr.id)) - t_trigger).total_seconds())
            settle(stack.settings.prefect_api, str(fr.id), args.gap)
        print(f"\ntrigger -> RUNNING of add_cloud_model on the cpu-light worker ({args.runs} runs, each "
              f"{args.gap:g} s after the previous one ended):")
        print(f"  via step API        median {statistics.median(via_api):5.2f} s   max {max(via_api):5.2f} s")
        print(f"  run_deployment      median {statistics.median(direct):5.2f} s   max {max(direct):5.2f} s  (baseline)")
        print(f"  ratio               median {statistics.median(via_api) / statistics.median(direct):.2f}x")
    finally:
        stack.stop()
        services.close()
        shutil.rmtree(os.environ["WEFT_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
