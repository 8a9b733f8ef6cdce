"""The platform `weft up` runs: Prefect server + UI, `cpu` workers, the `cpu-light` worker, deployments, the API.

Two profiles: `embedded` (the default: SQLite and `file://` storage under WEFT_HOME) and `production`
(`weft up --profile production`: weft's tables and the Prefect server's on PostgreSQL, storage on S3,
`settings.workers` cpu workers and `settings.api_processes` API processes, one per port from api_port;
a child that exits is restarted, unless it crash-loops). The embedded profile stops when a child exits.

Every process is a child of this one, named (`prefect-server`, `worker-cpu` or `worker-cpu-1`...,
`worker-cpu-light`, `api` or `api-1`...), in its own session. `stop()` ends them the way each expects (a Prefect worker
ignores a single SIGTERM, so it gets SIGINT), then every process they started: a process worker runs
each flow run in a session of its own, so the flow runs are found by walking /proc from the worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from weft import pools
from weft.settings import Settings, get_settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROFILES = ("embedded", "production")
MAX_RESTARTS, RESTART_WINDOW_S = 5, 300.0  # production: more crashes of one child within the window stop weft
CONTROLLER_CHECK_S = 15.0  # how often `weft up` checks that an endpoint controller run exists


class ProfileError(ValueError):
    """The settings do not fit the requested profile (the message names the WEFT_* variables)."""


def prefect_cli() -> str:
    """The `prefect` executable of this environment."""
    local = Path(sys.executable).with_name("prefect")
    return str(local) if local.exists() else (shutil.which("prefect") or "prefect")


def gpu_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (with the pid, its identity), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every live process below `pid` as (pid, start time), read from /proc (empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if (start := _start_time(child)) is not None:
                found.append((child, start))
                stack.append(child)
    return found


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_known(procs: list[tuple[int, str]], sig: int) -> list[tuple[int, str]]:
    """Signal each process that is still the one recorded; returns those that were alive."""
    alive = []
    for pid, start in procs:
        if _start_time(pid) == start:
            try:
                os.kill(pid, sig)
                alive.append((pid, start))
            except ProcessLookupError:
                pass
    return alive


@dataclass
class Child:
    """How to (re)start one named child and when it is ready."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None  # ready when this answers below 500
    ready_text: str | None = None  # ready when its log shows this (after the latest launch)
    stop_signal: int = signal.SIGTERM  # a Prefect worker ignores one SIGTERM: SIGINT
    log_offset: int = 0


@dataclass
class Platform:
    settings: Settings = field(default_factory=get_settings)
    with_api: bool = True
    profile: str = "embedded"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    left_behind: list[tuple[int, str]] = field(default_factory=list)  # below children killed without `tree`
    timings: dict[str, float] = field(default_factory=dict)  # seconds of each phase of the latest start()

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ProfileError(f"unknown profile {self.profile!r} (choose from {', '.join(PROFILES)})")

    # -- where things are -------------------------------------------------------------------------

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.prefect_port}"

    @property
    def api_names(self) -> list[str]:
        n = self.settings.api_processes
        return ["api"] if n == 1 else [f"api-{i}" for i in range(1, n + 1)]

    @property
    def api_urls(self) -> list[str]:
        """One URL per API process (ports api_port, api_port + 1, ...)."""
        host = self.settings.api_host
        return [f"http://{host}:{self.settings.api_port + i}" for i in range(self.settings.api_processes)]

    @property
    def api_url(self) -> str:
        return self.api_urls[0]

    @property
    def worker_names(self) -> list[str]:
        """The cpu workers' child names (also their Prefect worker names, prefixed with the host)."""
        n = self.settings.workers
        return [f"worker-{pools.CPU}"] if n == 1 else [f"worker-{pools.CPU}-{i}" for i in range(1, n + 1)]

    @property
    def log_dir(self) -> Path:
        return self.settings.home_dir / "logs"

    def log_of(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid(self, name: str) -> int:
        """The PID of a named child (for a worker: the worker itself, not its flow runs)."""
        return self.procs[name].pid

    def pids(self, name: str) -> list[int]:
        """The child's PID and every process below it (a worker's flow runs and what they started)."""
        return [self.pid(name), *(pid for pid, _ in descendants(self.pid(name)))]

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    # -- environment and children -----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment every child shares: these settings, one WEFT_HOME, one Prefect server."""
        home = self.settings.home_dir
        return {
            **os.environ,
            **self.settings.to_env(),
            "WEFT_HOME": str(home),
            "WEFT_PREFECT_PORT": str(self.settings.prefect_port),
            "WEFT_API_PORT": str(self.settings.api_port),
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_API_URL": self.settings.prefect_api,
            "PREFECT_UI_API_URL": self.settings.prefect_api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(self.settings.worker_query_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(self.settings.flow_heartbeat_seconds),
            "DO_NOT_TRACK": "1",
            "WEFT_PROJECT_DIR": str(PROJECT_DIR),
        }

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, ready_url: str | None = None,
              ready_text: str | None = None) -> subprocess.Popen:
        """Start a named child in a session of its own, its output appended to `logs/<name>.log`."""
        self.children[name] = Child(args=args, env=env or {}, ready_url=ready_url, ready_text=ready_text,
                                    stop_signal=signal.SIGINT if name.startswith("worker") else signal.SIGTERM)
        return self._launch(name)

    def _launch(self, name: str) -> subprocess.Popen:
        child = self.children[name]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_of(name), "ab") as log:
            child.log_offset = log.tell()
            proc = subprocess.Popen(child.args, cwd=PROJECT_DIR, env={**self.env(), **child.env}, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def wait_http(self, name: str, url: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_of(name)}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{name} did not answer {url} within {timeout:.0f} s")

    def wait_log(self, name: str, text: str, timeout: float = 180) -> None:
        """Wait until the child's log, since its latest launch, contains `text`."""
        deadline = time.monotonic() + timeout
        offset = self.children[name].log_offset
        while time.monotonic() < deadline:
            with open(self.log_of(name), "rb") as log:
                log.seek(offset)
                if text.encode() in log.read():
                    return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}; see {self.log_of(name)}")
            time.sleep(0.3)
        raise TimeoutError(f"{name} did not log {text!r} within {timeout:.0f} s")

    def wait_ready(self, *names: str) -> None:
        """Wait until each named child answers its URL or logs its ready text."""
        for name in names:
            child = self.children[name]
            if child.ready_url:
                self.wait_http(name, child.ready_url)
            if child.ready_text:
                self.wait_log(name, child.ready_text)

    def run_step(self, what: str, args: list[str], timeout: float = 600) -> None:
        """Run a one-off child to completion (migrations, registration); raise with its output on failure."""
        result = subprocess.run(args, cwd=PROJECT_DIR, env=self.env(), capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    # -- start ------------------------------------------------------------------------------------

    def check_profile(self) -> None:
        """Raise ProfileError naming every missing or unfit setting of the production profile."""
        if self.profile == "production" and (problems := self.settings.production_problems()):
            raise ProfileError("weft up --profile production needs:\n  " + "\n  ".join(problems))

    def start(self) -> None:
        """Start everything and return when the Prefect server and the API processes answer and the workers
        have started. What does not depend on each other overlaps: weft's migrations run while the server
        boots, the API processes boot while the deployments are registered; the workers start after the
        registration (it creates their work pools). `timings` holds each phase's seconds."""
        self.check_profile()  # the children get this platform's settings through env(); os.environ stays as it is
        t0 = time.monotonic()
        server_env = {}
        if self.settings.prefect_database_url:
            server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.settings.prefect_database_url
        self.spawn("prefect-server", [prefect_cli(), "server", "start", "--host", self.settings.prefect_host,
                                      "--port", str(self.settings.prefect_port)],
                   env=server_env, ready_url=f"{self.settings.prefect_api}/health")
        self.run_step("the database migration", [sys.executable, "-m", "weft.cli", "migrate"])
        self.timings["migrate"] = time.monotonic() - t0
        self.wait_ready("prefect-server")
        self.timings["prefect-server"] = time.monotonic() - t0

        if self.with_api:
            for name, url in zip(self.api_names, self.api_urls):
                port = url.rsplit(":", 1)[1]
                self.spawn(name, [sys.executable, "-m", "uvicorn", "api.main:app", "--host", self.settings.api_host,
                                  "--port", port], ready_url=f"{url}/")
        t = time.monotonic()
        self.register()
        self.timings["register"] = time.monotonic() - t

        host = socket.gethostname()
        workers = {name: pools.CPU for name in self.worker_names} | {f"worker-{pools.LIGHT}": pools.LIGHT}
        if gpu_visible():
            workers[f"worker-{pools.GPU}"] = pools.GPU
        for name, pool in workers.items():
            args = [sys.executable, "-m", "weft.cli", "worker", "--pool", pool]
            if name[-1].isdigit():  # several workers on one pool: distinct names in Prefect
                args += ["--name", f"{host}-{name.removeprefix('worker-')}"]
            self.spawn(name, args, ready_text="started!")  # Prefect's "Worker '...' started!"
        t = time.monotonic()
        if self.with_api:
            self.wait_ready(*self.api_names)
        self.wait_ready(*workers)
        self.timings["workers-and-api"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - t0

    def ensure_controller(self) -> None:
        """Start an endpoint controller run when its last one ended (crashed with its worker, cancelled):
        endpoints keep their replicas only while a controller runs."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from weft.serving import controller

        try:
            with temporary_settings({PREFECT_API_URL: self.settings.prefect_api}):
                started = controller.ensure_running()
        except Exception as exc:  # the server restarts or is busy: look again next time
            print(f"could not check the endpoint controller: {exc}")
            return
        if started:
            print(f"the endpoint controller had stopped: started run {started}")

    def register(self) -> None:
        """Work pools, the result-storage block and the deployments, by `python -m deployments.register`
        (a child process: weft's core imports no deployment or block code)."""
        self.run_step("registering the deployments", [sys.executable, "-m", "deployments.register"])

    # -- faults and stopping ----------------------------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL, tree: bool = True) -> None:
        """Send `sig` to a named child's process group and, with `tree`, to every process below it
        (a worker's flow runs live in sessions of their own). Does not wait. What is left running below
        it is remembered, and `stop()` ends it."""
        proc = self.procs[name]
        below = descendants(proc.pid)
        _signal_group(proc.pid, sig)
        if tree:
            _signal_known(below, sig)
        else:
            self.left_behind += below

    def wait(self, name: str, timeout: float = 30) -> int:
        """Wait for a named child to exit; returns its exit code."""
        return self.procs[name].wait(timeout=timeout)

    def stop_child(self, name: str, timeout: float = 15) -> None:
        """Stop one child (and what it started) the way `stop()` does."""
        self._terminate([name], timeout)

    def restart(self, name: str, timeout: float = 15) -> subprocess.Popen:
        """Stop a named child if it still runs, start it again with the same command, wait until ready."""
        if self.alive(name):
            self.stop_child(name, timeout)
        proc = self._launch(name)
        self.wait_ready(name)
        return proc

    def _terminate(self, names: list[str], timeout: float = 15) -> None:
        """Signal every named child's group (SIGINT for workers, else SIGTERM), wait, kill stragglers,
        then end whatever they left running below them (TERM, then KILL after 5 s)."""
        names = [n for n in names if n in self.procs]
        below = {n: descendants(self.procs[n].pid) for n in names}
        for name in names:
            if self.procs[name].poll() is None:
                _signal_group(self.procs[name].pid, self.children[name].stop_signal)
        deadline = time.monotonic() + timeout
        for name in names:
            proc = self.procs[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        left = _signal_known([p for n in names for p in below[n]], signal.SIGTERM)
        deadline = time.monotonic() + 5
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [(pid, start) for pid, start in left if _start_time(pid) == start and not _zombie(pid)]
        _signal_known(left, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the children: workers first (SIGINT) with their flow runs, then the API processes and the
        server (SIGTERM); kill stragglers."""
        workers = [n for n in self.procs if n.startswith("worker")]
        self._terminate(workers)
        self._terminate([n for n in self.procs if n not in workers])
        _signal_known(self.left_behind, signal.SIGKILL)
        self.left_behind.clear()
        self.procs.clear()

    def serve_forever(self) -> None:
        """`weft up`: start, print the URLs, and stop everything on Ctrl-C or SIGTERM."""
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`cmd &`)
        try:
            self.start()
            profile = "" if self.profile == "embedded" else f", profile {self.profile}"
            print(f"weft is up (data in {self.settings.home_dir}{profile})")
            print(f"  Prefect UI : {self.ui_url}")
            for url in self.api_urls:
                print(f"  weft API   : {url}  (docs at {url}/docs)")
            if self.profile != "embedded" or self.settings.workers > 1:
                print(f"  workers    : {', '.join(n for n in self.procs if n.startswith('worker'))}")
            print(f"  logs       : {self.log_dir}")
            print("Press Ctrl-C to stop.")
            restarts: dict[str, list[float]] = {}
            checked = time.monotonic()
            while True:
                time.sleep(1)
                if time.monotonic() - checked > CONTROLLER_CHECK_S:
                    checked = time.monotonic()
                    self.ensure_controller()
                dead = [n for n, p in self.procs.items() if p.poll() is not None]
                if not dead:
                    continue
                recent = {n: [t for t in restarts.get(n, []) if time.monotonic() - t < RESTART_WINDOW_S]
                          for n in dead}
                if self.profile == "embedded" or any(len(r) >= MAX_RESTARTS for r in recent.values()):
                    print(f"stopping: {', '.join(dead)} exited (see {self.log_dir})")
                    break
                for name in dead:  # production: a crashed child is restarted, a crash loop stops weft
                    print(f"{name} exited with {self.procs[name].returncode}: restarting (see {self.log_of(name)})")
                    restarts[name] = [*recent[name], time.monotonic()]
                    self.restart(name)
        except KeyboardInterrupt:
            print("\nstopping weft ...")
        finally:
            self.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
