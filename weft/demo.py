"""`weft demo` (`make demo`): fine-tune SmolLM2-135M-Instruct on the bundled product-code dataset, on
CPU, through the platform's own API, and show the answers before and after.

Steps: build the demo model if missing → start the platform in-process (Prefect server, cpu worker,
deployments, API on free ports) → register a demo user → onboard the model from local disk through
the step API → upload ``data/demo/train.jsonl`` → create a training job → stream its logs (SSE) →
evaluate base vs fine-tuned on ``data/demo/test.jsonl`` with the evaluate_model flow → stop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from weft.demo_data import TEST_FILE, TRAIN_FILE, read_jsonl
from weft.net import free_port
from weft.statuses import RUN_TERMINAL, TERMINAL, DatasetStatus, RunStatus, WorkflowStatus

DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"
# ~2 minutes of training on two CPU cores (126 s measured); exact match on the test file 0% -> 90%.
DEMO_CONFIG: dict[str, Any] = {
    "algorithm": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "learning_rate": 1e-3, "batch_size": 8,
    "max_steps": 60, "warmup_steps": 5, "max_seq_length": 128, "logging_steps": 5, "checkpoint_steps": 30,
}
LOCAL = "/api/v1/models/local-model-workflow"
SHOWN = 5  # test prompts printed before/after
EVAL_BENCHMARKS = ["weft_general_qa"]  # offline lm-eval task kept in weft/evaluation/tasks


def say(msg: str = "") -> None:
    print(msg, flush=True)


def wait_for(check, what: str, timeout: float, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def ok(r, status: int = 200) -> dict:
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:2000]}")
    return r.json()


def register_user(api) -> dict[str, str]:
    name = f"demo{os.getpid()}{int(time.time()) % 100000}"
    body = ok(api.post("/api/v1/auth/register", json={"email": f"{name}@example.com", "username": name,
                                                      "password": "weft-demo-password"}), 201)
    return {"Authorization": f"Bearer {body['access_token']}"}


def onboard_model(api, headers, model_dir: Path) -> dict:
    """Document 004's add-local-model steps for a folder on disk; returns the finished workflow."""
    steps = [
        {"workflow_total_steps": 6, "step_number": 1, "trigger_workflow": False, "modality": "llm"},
        {"step_number": 2, "trigger_workflow": False, "provider_type": "disk"},
        {"step_number": 3, "trigger_workflow": False, "name": DEMO_MODEL_NAME, "uri": str(model_dir),
         "author": "weft-demo", "tags": [{"name": "text-generation", "color": "#66d1DF"}], "icon": None},
        {"step_number": 4, "trigger_workflow": True, "proprietary_credential_id": None},
    ]
    workflow_id = None
    for step in steps:
        body = ok(api.post(LOCAL, json={**step, **({"workflow_id": workflow_id} if workflow_id else {})},
                           headers=headers))
        workflow_id = body["workflow_id"]

    def finished():
        view = ok(api.get(f"/api/v1/workflows/{workflow_id}", headers=headers))
        return view if view["status"] in TERMINAL else None

    view = wait_for(finished, "model onboarding", 600)
    if view["status"] != WorkflowStatus.COMPLETED:
        raise RuntimeError(f"onboarding {view['status']}: {view.get('reason')}")
    return view


def upload_dataset(api, headers, path: Path) -> str:
    body = ok(api.post("/api/v1/datasets/upload", headers=headers, data={"name": f"demo product codes ({path.stem})"},
                       files={"file": (path.name, path.read_bytes(), "application/jsonl")}), 201)
    dataset_id = body["id"]

    def ready():
        status = ok(api.get(f"/api/v1/datasets/{dataset_id}", headers=headers))["status"]
        if status not in (DatasetStatus.PROCESSING, DatasetStatus.READY):
            raise RuntimeError(f"dataset {dataset_id} is {status}")
        return status == DatasetStatus.READY

    wait_for(ready, "dataset processing", 120, poll=0.3)
    return dataset_id


def job_log_events(api, headers, job_id: str, read_timeout: float = 600) -> Iterator[tuple[int, str]]:
    """(position, line) of the job's log lines over Server-Sent Events until the stream's end event;
    reconnects with Last-Event-ID if the connection drops (5 tries)."""
    import httpx

    last = 0
    for _attempt in range(5):
        extra = {"Accept": "text/event-stream", **({"Last-Event-ID": str(last)} if last else {})}
        try:
            with api.stream("GET", f"/api/v1/jobs/{job_id}/logs", headers={**headers, **extra},
                            timeout=httpx.Timeout(30, read=read_timeout)) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"log stream -> {response.status_code}: {response.read()[:500]!r}")
                event_id = None
                for line in response.iter_lines():
                    if line.startswith("id: "):
                        event_id = int(line[4:])
                    elif line.startswith("data: ") and event_id is not None:
                        last, event_id = event_id, None
                        yield last, line[6:]
                    elif line.startswith("event: end"):
                        return
                return
        except httpx.HTTPError as exc:
            say(f"  (log stream interrupted: {exc}; reconnecting after line {last})")
            time.sleep(1)


def stream_logs(api, headers, job_id: str) -> None:
    """Print the job's log lines until the stream ends."""
    for _position, line in job_log_events(api, headers, job_id):
        say(f"  | {line}")


def run_demo(home: Path | None = None, steps: int | None = None, keep_running: bool = False) -> dict[str, Any]:
    """The whole demo; returns the measured numbers. `home` overrides WEFT_HOME for this run."""
    import httpx

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    if home is not None:
        os.environ["WEFT_HOME"] = str(Path(home).expanduser().resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from weft.settings import Settings, get_settings

    get_settings.cache_clear()
    settings = get_settings()
    if not TRAIN_FILE.exists() or not TEST_FILE.exists():
        from weft.demo_data import write_demo_data

        write_demo_data()
    test = read_jsonl(TEST_FILE)

    say(f"== weft demo: LoRA fine-tune of {DEMO_MODEL_NAME} on CPU (data in {settings.home_dir})")
    t = time.perf_counter()
    from weft.demo_model import build_demo_model

    model_dir = build_demo_model(settings.home_dir / "demo-models" / DEMO_MODEL_NAME)
    timings["demo_model"] = time.perf_counter() - t

    from weft.platform import Platform

    platform = Platform(settings=Settings(api_port=free_port(), prefect_port=free_port()))
    t = time.perf_counter()
    say("== starting the platform (Prefect server, cpu worker, deployments, API) ...")
    try:
        platform.start()
        timings["platform_start"] = time.perf_counter() - t
        say(f"   Prefect UI {platform.ui_url}   API {platform.api_url}/docs   ({timings['platform_start']:.0f} s)")
        api = httpx.Client(base_url=platform.api_url, timeout=60)
        headers = register_user(api)

        t = time.perf_counter()
        say(f"== onboarding {model_dir} through the step API ({LOCAL}) ...")
        view = onboard_model(api, headers, model_dir)
        timings["onboarding"] = time.perf_counter() - t
        say(f"   model registered, security scan done ({timings['onboarding']:.0f} s, "
            f"{len(view['steps'])} steps)")

        t = time.perf_counter()
        dataset_id = upload_dataset(api, headers, TRAIN_FILE)
        timings["dataset_upload"] = time.perf_counter() - t
        say(f"== uploaded {TRAIN_FILE.relative_to(TRAIN_FILE.parents[2])} as dataset {dataset_id}")

        config = {**DEMO_CONFIG, **({"max_steps": steps} if steps else {}), "base_model": DEMO_MODEL_NAME,
                  "dataset_id": dataset_id, "name": "smollm2-product-codes"}
        t = time.perf_counter()
        job = ok(api.post("/api/v1/jobs", headers=headers, json={"config": config}), 201)
        say(f"== training job {job['job_id']} ({json.dumps({k: v for k, v in config.items() if k != 'dataset_id'})})")
        wait_for(lambda: ok(api.get(f"/api/v1/jobs/{job['job_id']}", headers=headers)).get("flow_run_id"),
                 "flow run", 60)
        stream_logs(api, headers, job["job_id"])

        def done():
            v = ok(api.get(f"/api/v1/jobs/{job['job_id']}", headers=headers))
            return v if v["status"] in RUN_TERMINAL else None

        view = wait_for(done, "training job", 1800, poll=1)
        timings["job"] = time.perf_counter() - t
        if view["status"] != RunStatus.COMPLETED:
            raise RuntimeError(f"training job {view['status']}: {view.get('reason')}")
        metrics = view["metrics"]
        say(f"   job completed in {timings['job']:.0f} s: train_runtime {metrics.get('train_runtime', 0):.0f} s, "
            f"train_loss {metrics.get('train_loss', float('nan')):.3f}"
            + (f", {metrics['train_tokens_per_second']:.0f} tokens/s" if metrics.get("train_tokens_per_second") else ""))

        t = time.perf_counter()
        say(f"== evaluating base vs fine-tuned on {len(test)} held-out prompts (evaluate_model flow) ...")
        test_set = upload_dataset(api, headers, TEST_FILE)
        created = ok(api.post(f"/api/v1/models/{view['model_id']}/evaluate", headers=headers, json={
            "dataset_id": test_set, "max_new_tokens": 12, "benchmarks": EVAL_BENCHMARKS,
            "benchmark_limit": 40}), 201)

        def evaluated():
            v = ok(api.get(f"/api/v1/evaluations/{created['evaluation_id']}", headers=headers))
            return v if v["status"] in RUN_TERMINAL else None

        evaluation = wait_for(evaluated, "evaluation", 1800, poll=1)
        timings["evaluation"] = time.perf_counter() - t
        if evaluation["status"] != RunStatus.COMPLETED:
            raise RuntimeError(f"evaluation {evaluation['status']}: {evaluation.get('error')}")
        api.close()
    finally:
        if keep_running:
            say(f"platform left running: {platform.api_url}")
        else:
            say("== stopping the platform")
            platform.stop()

    results = evaluation["results"]
    for example in evaluation["examples"][:SHOWN]:
        say(f"\nQ: {example['input']}   (expected {example['expected']})")
        say(f"   before: {example['base_model_output'][:80]!r}")
        say(f"   after : {example['fine_tuned_output'][:80]!r}")
    em_before, em_after = results["base_model"]["exact_match"], results["fine_tuned"]["exact_match"]
    ci = results["improvement"]["confidence_interval"]
    say(f"\n== exact match on {len(test)} held-out test prompts: before {em_before:.0%} -> after {em_after:.0%} "
        f"(gain {ci['mean']:+.2f}, 95% CI [{ci['low']:+.2f}, {ci['high']:+.2f}])")
    for row in evaluation["benchmarks"]:
        say(f"   {row['task']} {row['metric']}: base {row['base']:.3f} -> fine-tuned {row['tuned']:.3f}")
    say(f"   promoted: {evaluation['promoted']} ({evaluation['gate'].get('reason')})")
    timings["total"] = time.perf_counter() - t_start
    say("== timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return {"exact_match_before": em_before, "exact_match_after": em_after, "metrics": metrics,
            "evaluation": evaluation,
            "timings": timings, "job_id": job["job_id"]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="weft demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {DEMO_CONFIG['max_steps']})")
    args = parser.parse_args(argv)
    run_demo(steps=args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
