"""`benchmarks/fine_tune.py --weft platform`: a fine-tune through the real platform (`weft up`), its logs
followed over SSE by a real client, with the CPU each platform process used while the job trained.

What runs: weft.platform.Platform on free ports (Prefect server + UI, the `cpu` worker, the deployments,
the API) in the benchmark's temporary WEFT_HOME; a registered user; the model onboarded from disk through
the step API; the rows uploaded through POST /api/v1/datasets/upload; each run is POST /api/v1/jobs with
the same config as the plain script, a client thread following GET /api/v1/jobs/{id}/logs
(Accept: text/event-stream) until its `end` event, then the job view's metrics (train_tokens /
train_runtime, the Trainer's own timer, as in the other cases).

CPU accounting survives a busy machine: every second a monitor thread reads the cumulative user+system
CPU time of every platform process (psutil; the worker's descendants are the flow-run process) and of the
follower thread; the figures are the differences over the training window (the first to the last
`step N/M` log line of the run, timestamps from the flow-run process).

While the plain script runs, the platform's process groups are stopped (SIGSTOP, then SIGCONT), so the
plain figure is "the same machine without weft" (`--platform-idle run` keeps them running instead).
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from weft.testing.polling import ok, wait_for

LOCAL = "/api/v1/models/local-model-workflow"
JOB_FIELDS = ("rank", "alpha", "dropout", "target_modules", "learning_rate", "batch_size",
              "gradient_accumulation_steps", "num_epochs", "max_steps", "warmup_steps", "validation_split",
              "checkpoint_steps", "max_seq_length", "logging_steps", "seed")
QUIETING = ("PREFECT_LOGGING_LEVEL", "TRANSFORMERS_VERBOSITY", "HF_DATASETS_DISABLE_PROGRESS_BARS")
LABELS = ("prefect-server", "worker", "flow-run", "api", "follower", "bench (rest)")


# --- CPU accounting ---------------------------------------------------------------------------------------

class CpuMonitor(threading.Thread):
    """Cumulative CPU seconds per label, sampled every `interval` s: the platform's processes (each with
    its descendants; the worker's descendants are the flow-run processes) and threads of this process."""

    def __init__(self, roots: dict[str, int], threads: dict[str, int], interval: float = 1.0) -> None:
        super().__init__(name="cpu-monitor", daemon=True)
        import psutil

        self.psutil = psutil
        self.roots, self.threads, self.interval = roots, threads, interval
        self.seen: dict[int, tuple[str, float]] = {}  # pid -> (label, last cumulative cpu seconds)
        self.procs: list[tuple[str, Any]] = []
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.halt = threading.Event()
        self.me = psutil.Process()

    @staticmethod
    def cpu(proc) -> float:
        t = proc.cpu_times()
        return t.user + t.system

    def refresh(self) -> None:
        """The processes to read: each root and its descendants (listing them scans /proc: not every sample)."""
        ps = self.psutil
        procs = []
        for name, pid in self.roots.items():
            try:
                root = ps.Process(pid)
                procs += [(name, root)] + [("flow-run" if name.startswith("worker") else name, child)
                                           for child in root.children(recursive=True)]
            except ps.Error:
                continue
        self.procs = procs

    def sample(self) -> None:
        ps = self.psutil
        for label, proc in self.procs:
            try:
                self.seen[proc.pid] = (label, self.cpu(proc))
            except ps.Error:
                pass  # ended: its last sample stays
        totals = {label: 0.0 for label in LABELS}
        for label, cpu in self.seen.values():
            label = next((k for k in ("worker", "api") if label.startswith(k)), label)  # worker-cpu-2, api-1
            totals[label] = totals.get(label, 0.0) + cpu
        own = {t.id: t.user_time + t.system_time for t in self.me.threads()}
        named = 0.0
        for label, tid in self.threads.items():
            totals[label] = own.get(tid, 0.0)
            named += totals[label]
        totals["bench (rest)"] = self.cpu(self.me) - named
        self.samples.append((time.time(), totals))

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            if n % 5 == 0:
                self.refresh()
            self.sample()
            n += 1
            self.halt.wait(self.interval)
        self.sample()

    def stop(self) -> None:
        self.halt.set()
        self.join()

    def at(self, t: float) -> dict[str, float]:
        """Cumulative CPU seconds per label at wall time `t` (linear between samples)."""
        times = [s[0] for s in self.samples]
        i = bisect.bisect_left(times, t)
        if i <= 0:
            return dict(self.samples[0][1])
        if i >= len(times):
            return dict(self.samples[-1][1])
        (t0, a), (t1, b) = self.samples[i - 1], self.samples[i]
        w = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
        return {k: a.get(k, 0.0) + w * (b.get(k, 0.0) - a.get(k, 0.0)) for k in b}

    def between(self, t0: float, t1: float) -> dict[str, float]:
        a, b = self.at(t0), self.at(t1)
        return {k: b[k] - a.get(k, 0.0) for k in b}


# --- the log follower --------------------------------------------------------------------------------------

@dataclass
class Follower:
    """A client thread reading the job's SSE log stream until its end (weft.demo.job_log_events)."""

    base_url: str
    headers: dict[str, str]
    job_id: str
    arrivals: dict[int, float] = field(default_factory=dict)  # event id -> wall time received
    ended: bool = False
    error: BaseException | None = None
    native_id: int = 0

    def run(self) -> None:
        import httpx

        from weft.demo import job_log_events

        self.native_id = threading.get_native_id()
        try:
            with httpx.Client(base_url=self.base_url) as client:
                for position, _line in job_log_events(client, self.headers, self.job_id, read_timeout=900):
                    self.arrivals[position] = time.time()
                self.ended = True
        except BaseException as exc:  # reported by the main thread
            self.error = exc


# --- the platform case --------------------------------------------------------------------------------------

class WeftPlatform:
    """`weft up` on free ports in the benchmark's WEFT_HOME, one user, the model and the rows registered
    through the API; each run() is one job created through POST /api/v1/jobs, followed over SSE."""

    def __init__(self, model_dir: Path, rows_file: Path, idle: str = "stop") -> None:
        import httpx

        from weft.demo import upload_dataset
        from weft.net import free_port
        from weft.platform import Platform
        from weft.settings import Settings, get_settings

        get_settings.cache_clear()
        roots = [*get_settings().allowed_disk_roots, model_dir.resolve().parent]  # the `disk` provider may read it
        os.environ["WEFT_DISK_ROOTS"] = json.dumps([str(r) for r in roots])
        get_settings.cache_clear()
        self.idle = idle
        self.platform = Platform(settings=Settings(api_port=free_port(), prefect_port=free_port()))
        # the children inherit this environment: not the benchmark's quieting (a WARNING run logger would
        # ship none of the training's log lines), so the job logs what `weft up` logs
        quiet = {k: os.environ.pop(k) for k in QUIETING if k in os.environ}
        t = time.perf_counter()
        try:
            self.platform.start()
        except BaseException:
            self.platform.stop()
            raise
        finally:
            os.environ.update(quiet)
        self.start_seconds = time.perf_counter() - t
        self.api = httpx.Client(base_url=self.platform.api_url, timeout=60)
        try:
            name = f"bench{os.getpid()}"
            body = ok(self.api.post("/api/v1/auth/register", json={
                "email": f"{name}@example.com", "username": name, "password": "weft-bench-password"}), 201)
            self.headers = {"Authorization": f"Bearer {body['access_token']}"}
            self.model_id = self.onboard(model_dir)
            self.dataset_id = upload_dataset(self.api, self.headers, rows_file)
        except BaseException:
            self.close()
            raise
        self.runs = 0

    def onboard(self, model_dir: Path) -> str:
        steps = [
            {"workflow_total_steps": 6, "step_number": 1, "trigger_workflow": False, "modality": "llm"},
            {"step_number": 2, "trigger_workflow": False, "provider_type": "disk"},
            {"step_number": 3, "trigger_workflow": False, "name": "bench base", "uri": str(model_dir),
             "author": "weft-bench", "tags": [], "icon": None},
            {"step_number": 4, "trigger_workflow": True, "proprietary_credential_id": None},
        ]
        workflow_id = None
        for step in steps:
            workflow_id = ok(self.api.post(LOCAL, headers=self.headers, json={
                **step, **({"workflow_id": workflow_id} if workflow_id else {})}))["workflow_id"]

        def finished():
            view = ok(self.api.get(f"/api/v1/workflows/{workflow_id}", headers=self.headers))
            return view if view["status"] in ("COMPLETED", "FAILED", "CANCELLED") else None

        view = wait_for(finished, "model onboarding", 900, poll=0.5)
        if view["status"] != "COMPLETED":
            raise RuntimeError(f"onboarding {view['status']}: {view.get('reason')}")
        models = ok(self.api.get("/api/v1/models", headers=self.headers, params={"limit": 100}))["data"]
        return next(m["id"] for m in models if m["name"] == "bench base")

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """Share of one core each platform process uses with no job running, over `seconds`."""
        monitor = CpuMonitor(self.roots(), {})
        monitor.start()
        time.sleep(seconds)
        monitor.stop()
        t0, t1 = monitor.samples[0][0], monitor.samples[-1][0]
        return {k: v / (t1 - t0) for k, v in monitor.between(t0, t1).items() if k != "follower"}

    def roots(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.platform.procs.items()}

    def signal_all(self, sig: int) -> None:
        for proc in self.platform.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, sig)

    def pause(self) -> None:
        """Before a plain run: stop the platform's process groups (a machine without weft)."""
        if self.idle == "stop":
            self.signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        if self.idle == "stop":
            self.signal_all(signal.SIGCONT)
            time.sleep(3)  # let the server, worker and API catch up (heartbeats, loops) before the next job

    def run(self, config) -> dict[str, Any]:
        self.runs += 1
        job_config = {"base_model": self.model_id, "dataset_id": self.dataset_id, "name": f"bench-{self.runs}",
                      "algorithm": config.method, **{k: getattr(config, k) for k in JOB_FIELDS}}
        if config.method == "qlora":
            job_config["quantization"] = "nf4"
        t0 = time.perf_counter()
        job = ok(self.api.post("/api/v1/jobs", headers=self.headers, json={"config": job_config}), 201)
        follower = Follower(self.platform.api_url, self.headers, job["job_id"])
        thread = threading.Thread(target=follower.run, name="sse-follower", daemon=True)
        thread.start()
        wait_for(lambda: follower.native_id, "follower start", 10, poll=0.01)
        monitor = CpuMonitor(self.roots(), {"follower": follower.native_id})
        monitor.start()
        try:
            thread.join()  # this thread only waits while the job trains
        finally:
            monitor.stop()
        if follower.error is not None:
            raise RuntimeError(f"the log follower failed: {follower.error!r}") from follower.error

        def done():
            view = ok(self.api.get(f"/api/v1/jobs/{job['job_id']}", headers=self.headers))
            return view if view["status"] in ("completed", "failed", "cancelled") and \
                (view["status"] != "completed" or view["metrics"]) else None

        view = wait_for(done, "job completion", 120, poll=0.5)
        wall = time.perf_counter() - t0
        if view["status"] != "completed":
            raise RuntimeError(f"job {view['status']}: {view.get('reason')}")
        logs = ok(self.api.get(f"/api/v1/jobs/{job['job_id']}/logs", headers=self.headers,
                               params={"lines": 10_000}))["logs"]
        stamps = [datetime.fromisoformat(line["timestamp"]).timestamp() for line in logs]
        steps = [t for t, line in zip(stamps, logs) if line["message"].startswith("step ")]
        window = (steps[0], steps[-1]) if len(steps) >= 2 else (monitor.samples[0][0], monitor.samples[-1][0])
        cpu = monitor.between(*window)
        latencies = [follower.arrivals[i + 1] - stamps[i] for i in range(len(stamps)) if i + 1 in follower.arrivals]
        m = dict(view["metrics"])
        m.update(flow_wall=wall, window=window[1] - window[0], cpu=cpu, lines=len(follower.arrivals),
                 log_lines=len(logs), latency_median=statistics.median(latencies) if latencies else float("nan"),
                 latency_max=max(latencies) if latencies else float("nan"), ended=follower.ended)
        return m

    def close(self) -> None:
        try:
            self.api.close()
            self.signal_all(signal.SIGCONT)
        finally:
            self.platform.stop()


def cpu_per_ktoken(m: dict[str, Any]) -> float:
    """CPU seconds per 1000 trained tokens: the plain script's process, or the job's flow-run process
    (over the window, whose tokens are pro rata of train_runtime)."""
    if "cpu" not in m:
        return 1000 * m["train_cpu"] / m["train_tokens"] if m.get("train_cpu") else float("nan")
    tokens = m["train_tokens"] * min(1.0, m["window"] / m["train_runtime"])
    return 1000 * m["cpu"]["flow-run"] / tokens if tokens else float("nan")


def cpu_table(runs: list[dict[str, Any]]) -> str:
    """CPU seconds (and share of one core) per platform process over each run's training window."""
    rows = [f"  {'process':15s} " + " ".join(f"{'run ' + str(i + 1):>16s}" for i in range(len(runs)))]
    labels = list(LABELS) + sorted({k for m in runs for k in m["cpu"]} - set(LABELS))
    for label in labels:
        cells = []
        for m in runs:
            s = m["cpu"].get(label, 0.0)
            cells.append(f"{s:7.2f} s {100 * s / m['window']:4.0f}%")
        rows.append(f"  {label:15s} " + " ".join(f"{c:>16s}" for c in cells))
    rows.append(f"  {'(window)':15s} " + " ".join(f"{m['window']:7.1f} s      " for m in runs))
    return "\n".join(rows)
