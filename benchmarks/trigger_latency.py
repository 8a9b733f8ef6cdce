"""Trigger -> RUNNING latency per flow and per way of starting a flow run, on the real platform.

Starts the platform (`weft.platform.Platform`: Prefect server, `cpu` and `cpu-light` workers) in a temporary
WEFT_HOME with free ports (both workers are weft's process worker, deployments/worker.py).

Each flow gets copies of its deployment, one per way of starting a run:

  prefect    Prefect's own process worker (`prefect worker start`, on a pool of its own that this
             script creates), polling every second: Prefect 3.9's workspace supervisor (imports
             Prefect and runs the pull steps) execs `python -m prefect.engine` (imports Prefect again,
             then the flow)
  cpu        the platform's `cpu` worker (weft's: woken by events, the run is one
             `python -m prefect.engine` interpreter)
  light      the `cpu-light` worker: the run starts in a warm, pre-imported process (light flows only)

It triggers each (flow, way) in turn with `run_deployment(timeout=0)`, waits for the run to finish
(heavy runs are cancelled once RUNNING) and a gap, and prints per pair the median trigger -> RUNNING
with its split (trigger -> PENDING: poll + worker pickup; PENDING -> RUNNING: process start, imports,
engine start), the `run_deployment` call alone as the baseline, and ratios. First it times fresh
interpreters importing Prefect, the supervisor, the engine and each flow module (`--no-imports` skips).

Usage: .venv/bin/python benchmarks/trigger_latency.py [--runs 5] [--gap 6] [--ways prefect,cpu,light]
"""

from __future__ import annotations

import argparse
import os
import platform as host
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OPENAI = "6f1b5a3e-0a0b-4c59-9d0e-000000000001"
LIGHT_POOL = "cpu-light"
PREFECT_POOL = "bench-prefect"
LIGHT_FLOWS = ("add_cloud_model", "add_local_model", "model_security_scan")
HEAVY_FLOWS = ("fine_tune",)
SOURCE = {"add_cloud_model": "add_cloud_model/default", "add_local_model": "add_local_model/default",
          "model_security_scan": "model_security_scan/default", "fine_tune": "fine_tune/cpu"}
HEAVY_MODULES = ("torch", "transformers", "peft", "trl", "lm_eval", "bitsandbytes", "evidently",
                 "great_expectations", "modelscan", "picklescan", "pandas", "pyarrow", "numpy", "alembic")
IMPORTS = {
    "python -c pass": "pass",
    "import prefect": "import prefect",
    "supervisor's imports": "import prefect.runner._workspace_supervisor",
    "engine's imports": "import prefect.engine, prefect.flow_engine",
    **{f"import flows.{f}": f"import prefect.engine, prefect.flow_engine, flows.{f}" for f in LIGHT_FLOWS + HEAVY_FLOWS},
}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fresh_import_seconds(statement: str, repeats: int) -> tuple[float, list[str]]:
    """Median wall time of a fresh interpreter running `statement`, and the heavy packages it loaded."""
    times, heavy = [], []
    probe = f"{statement}\nimport sys\nprint(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
        heavy = [m for m in out.stdout.strip().split(",") if m]
    return median(times), heavy


def print_import_costs(repeats: int) -> None:
    print(f"\nfresh interpreter, median of {repeats} (wall seconds; heavy packages it loaded):")
    for label, statement in IMPORTS.items():
        seconds, heavy = fresh_import_seconds(statement, repeats)
        print(f"  {label:34s} {seconds:6.2f} s   {', '.join(heavy) or '-'}")


def states_of(prefect_api: str, flow_run_id: str) -> dict[str, datetime]:
    """First timestamp of each state type of the run."""
    found: dict[str, datetime] = {}
    for s in httpx.get(f"{prefect_api}/flow_run_states/", params={"flow_run_id": flow_run_id}, timeout=30).json():
        ts = datetime.fromisoformat(s["timestamp"])
        if s["type"] not in found or ts < found[s["type"]]:
            found[s["type"]] = ts
    return found


def wait_for(prefect_api: str, flow_run_id: str, types: set[str], timeout: float) -> dict[str, datetime]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = states_of(prefect_api, flow_run_id)
        if types & states.keys():
            return states
        time.sleep(0.1)
    raise TimeoutError(f"flow run {flow_run_id} reached none of {sorted(types)} within {timeout:.0f} s")


TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# Log lines that cut PENDING -> RUNNING into phases (each phase: since the previous mark):
#   submitted   worker: configuration, labels, Submitting state, executor context, process started
#   pull steps  the first Prefect process of the run is up (imports) and has read its flow run
#   steps done  the pull steps (set_working_directory) ran
#   RUNNING     the flow is loaded (process: a second interpreter first) and the engine set RUNNING
MARKS = {"submitted": "submitted to infrastructure", "pull steps": "deployment pull step(s)",
         "steps done": "All deployment steps completed"}


def log_marks(client, flow_run_id) -> dict[str, datetime]:
    """When each of MARKS first appears in the run's logs."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
    found: dict[str, datetime] = {}
    for entry in sorted(logs, key=lambda e: e.timestamp):
        for mark, text in MARKS.items():
            if mark not in found and text in entry.message:
                found[mark] = entry.timestamp
    return found


def copy_deployment(client, source: str, name: str, pool: str, job_variables: dict) -> str:
    """A copy of deployment `source` (same flow, entrypoint, pull steps, schema) named `name` on `pool`."""
    from prefect.exceptions import ObjectNotFound

    dep = client.read_deployment_by_name(source)
    flow_name = source.split("/")[0]
    try:
        client.delete_deployment(client.read_deployment_by_name(f"{flow_name}/{name}").id)
    except ObjectNotFound:
        pass
    client.create_deployment(flow_id=dep.flow_id, name=name, work_pool_name=pool, entrypoint=dep.entrypoint,
                             path=dep.path, pull_steps=dep.pull_steps, tags=["bench"],
                             parameter_openapi_schema=dep.parameter_openapi_schema, job_variables=job_variables,
                             enforce_parameter_schema=dep.enforce_parameter_schema)
    return f"{flow_name}/{name}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="measured runs per flow and way")
    parser.add_argument("--gap", type=float, default=6.0, help="seconds between a run's end and the next trigger")
    parser.add_argument("--ways", default="prefect,cpu,light")
    parser.add_argument("--flows", default=",".join(LIGHT_FLOWS + HEAVY_FLOWS))
    parser.add_argument("--import-repeats", type=int, default=3)
    parser.add_argument("--no-imports", action="store_true")
    args = parser.parse_args()
    ways, flows = args.ways.split(","), args.flows.split(",")

    print(f"machine: {host.machine()} {os.cpu_count()} cores, {host.python_implementation()} {host.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    if not args.no_imports:
        print_import_costs(args.import_repeats)

    os.environ["WEFT_HOME"] = tempfile.mkdtemp(prefix="weft-bench-trigger-")
    from weft.net import free_port
    from weft.platform import Platform
    from weft.settings import Settings

    stack = Platform(settings=Settings(api_port=free_port(), prefect_port=free_port()), with_api=False)
    t0 = time.perf_counter()
    stack.start()
    print(f"\nplatform start (server, deployments, worker): {time.perf_counter() - t0:.1f} s; worker polls every "
          f"{stack.settings.worker_query_seconds:g} s")
    try:
        run_benchmark(stack, args, ways, flows)
    finally:
        stack.stop()
        shutil.rmtree(os.environ["WEFT_HOME"], ignore_errors=True)


def run_benchmark(stack, args, ways: list[str], flows: list[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelling

    from weft.db import session_scope
    from weft.tables import User

    api = stack.settings.prefect_api
    with session_scope() as s:
        user = User(email="bench@example.com", username="bench", password_hash="x")
        s.add(user)
    owner = user.id
    from weft.testing.tiny_model import build_tiny_model

    tiny = build_tiny_model(stack.settings.home_dir / "tiny-model")

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        if "prefect" in ways:
            try:
                client.create_work_pool(WorkPoolCreate(name=PREFECT_POOL, type="process"))
            except ObjectAlreadyExists:
                pass
            from weft.platform import prefect_cli

            stack.spawn(f"worker-{PREFECT_POOL}", [prefect_cli(), "worker", "start", "--pool", PREFECT_POOL],
                        env={"PREFECT_WORKER_QUERY_SECONDS": "1"}, ready_text="started!")
            stack.wait_ready(f"worker-{PREFECT_POOL}")
        deployments: dict[tuple[str, str], str] = {}
        for flow in flows:
            for way in ways:
                if way == "light" and flow not in LIGHT_FLOWS:
                    continue
                pool = {"light": LIGHT_POOL, "prefect": PREFECT_POOL}.get(way, "cpu")
                deployments[(flow, way)] = copy_deployment(client, SOURCE[flow], f"bench-{way}", pool, {})

        def params(flow: str, i: int) -> dict:
            tag = f"{i}-{uuid.uuid4().hex[:6]}"
            if flow == "add_cloud_model":
                spec = {"provider_type": "cloud_model", "provider_id": OPENAI, "name": f"bench-{tag}",
                        "uri": f"openai/bench-{tag}", "modality": "llm"}
            elif flow == "add_local_model":
                spec = {"modality": "llm", "provider_type": "disk", "name": f"tiny-{tag}", "uri": str(tiny)}
            elif flow == "model_security_scan":
                spec = {"model_id": model_id}
            else:  # fine_tune: a dataset that does not exist fails the run right after it started
                spec = {"base_model": model_id, "dataset_id": str(uuid.uuid4()), "name": f"ft-{tag}"}
            return {"spec": spec, "owner_id": owner}

        def trigger(name: str, flow: str, i: int) -> dict[str, float]:
            t_trigger = datetime.now(UTC)
            t0 = time.perf_counter()
            fr = run_deployment(name, parameters=params(flow, i), timeout=0, as_subflow=False)
            call = time.perf_counter() - t0
            states = wait_for(api, str(fr.id), {"RUNNING"} | TERMINAL, timeout=180)
            if "RUNNING" not in states:
                raise RuntimeError(f"{name} run {fr.id} ended without running: {sorted(states)}")
            if flow in HEAVY_FLOWS:
                try:
                    client.set_flow_run_state(fr.id, Cancelling(), force=True)
                except Exception:
                    pass
            final = wait_for(api, str(fr.id), TERMINAL, timeout=300)
            running, pending = states["RUNNING"], states.get("PENDING", states["RUNNING"])
            result = {"call": call, "total": (running - t_trigger).total_seconds(),
                      "to_pending": (pending - t_trigger).total_seconds(),
                      "pending_to_running": (running - pending).total_seconds(),
                      "completed": float("COMPLETED" in final)}
            time.sleep(1.5)  # logs arrive late
            marks = log_marks(client, fr.id)
            points = [("PENDING", pending)] + [(m, marks[m]) for m in MARKS if m in marks] + [("RUNNING", running)]
            for (_, a), (b, t) in zip(points, points[1:]):
                result[f"phase:{b}"] = (t - a).total_seconds()
            return result

        # one onboarding first: the model the scan and fine-tune runs use (and a warm server)
        fr = run_deployment(SOURCE["add_local_model"], parameters=params("add_local_model", 0), timeout=0,
                            as_subflow=False)
        wait_for(api, str(fr.id), TERMINAL, timeout=300)
        with session_scope() as s:
            model_id = _model_of(s, str(fr.id))
        time.sleep(args.gap)

        results: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in deployments}
        for i in range(args.runs + 1):  # round 0 warms each deployment up and is not counted
            for key, name in deployments.items():
                r = trigger(name, key[0], i)
                if i:
                    results[key].append(r)
                print(f"  {'warm-up' if not i else f'run {i}':8s} {name:36s} trigger->RUNNING {r['total']:6.2f} s "
                      f"(->PENDING {r['to_pending']:5.2f}, PENDING->RUNNING {r['pending_to_running']:5.2f}) "
                      f"run_deployment {r['call'] * 1000:4.0f} ms{'' if r['completed'] else '  [not completed]'}",
                      flush=True)
                time.sleep(args.gap)

    print(f"\ntrigger -> RUNNING, median of {args.runs} runs each (load average now {os.getloadavg()[0]:.2f}):")
    print(f"  {'flow':22s} {'way':8s} {'median':>7s} {'min':>6s} {'max':>6s} {'->PENDING':>10s} "
          f"{'PEND->RUN':>10s} {'vs prefect':>10s} {'completed':>9s}")
    calls = []
    for (flow, way), rs in results.items():
        total = [r["total"] for r in rs]
        calls += [r["call"] for r in rs]
        base = results.get((flow, "prefect"))
        ratio = median(total) / median([r["total"] for r in base]) if base else float("nan")
        print(f"  {flow:22s} {way:8s} {median(total):6.2f}s {min(total):5.2f}s {max(total):5.2f}s "
              f"{median([r['to_pending'] for r in rs]):9.2f}s {median([r['pending_to_running'] for r in rs]):9.2f}s "
              f"{ratio:9.2f}x {sum(r['completed'] for r in rs):4.0f}/{len(rs)}")
    print("\nPENDING -> RUNNING by phase, medians (see MARKS in this script):")
    phases = [f"phase:{m}" for m in [*MARKS, "RUNNING"]]
    print(f"  {'flow':22s} {'way':8s} " + " ".join(f"{p.split(':')[1]:>11s}" for p in phases))
    for (flow, way), rs in results.items():
        cells = [median([r[p] for r in rs if p in r]) for p in phases]
        print(f"  {flow:22s} {way:8s} " + " ".join(f"{c:10.2f}s" for c in cells))
    call = median(calls)
    print(f"\nbaseline: run_deployment(timeout=0) alone, median of {len(calls)} calls: {call * 1000:.0f} ms")
    for way in ways:
        per_way = [r["total"] for (flow, w), rs in results.items() if w == way and flow in LIGHT_FLOWS for r in rs]
        if per_way:
            print(f"  light flows, {way:8s}: trigger->RUNNING median {median(per_way):5.2f} s "
                  f"= {median(per_way) / call:5.1f}x the run_deployment call")


def _model_of(session, workflow_id: str) -> str:
    from sqlmodel import select

    from weft.tables import Model

    model = session.exec(select(Model).where(Model.workflow_id == workflow_id)).first()
    if model is None:
        raise RuntimeError(f"the warm-up onboarding {workflow_id} registered no model")
    return model.id


if __name__ == "__main__":
    main()
