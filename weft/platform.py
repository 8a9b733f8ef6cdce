"""The embedded platform (`weft up`): Prefect server + UI, a `cpu` worker, deployments, the API.

Every process is a child of this one; `stop()` ends them the way each expects (a Prefect worker
ignores a single SIGTERM, so it gets SIGINT).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from weft import pools
from weft.settings import Settings, get_settings

PROJECT_DIR = Path(__file__).resolve().parent.parent


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


@dataclass
class Platform:
    settings: Settings = field(default_factory=get_settings)
    with_api: bool = True
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.prefect_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def log_dir(self) -> Path:
        return self.settings.home_dir / "logs"

    def env(self) -> dict[str, str]:
        """The environment every child shares: one WEFT_HOME, one Prefect server."""
        home = self.settings.home_dir
        return {
            **os.environ,
            "WEFT_HOME": str(home),
            "WEFT_PREFECT_PORT": str(self.settings.prefect_port),
            "WEFT_API_PORT": str(self.settings.api_port),
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_API_URL": self.settings.prefect_api,
            "PREFECT_UI_API_URL": self.settings.prefect_api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(self.settings.worker_query_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "DO_NOT_TRACK": "1",
            "WEFT_PROJECT_DIR": str(PROJECT_DIR),
        }

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(args, cwd=PROJECT_DIR, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def wait_http(self, name: str, url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{name} did not answer {url} within {timeout:.0f} s")

    def start(self) -> None:
        """Start everything, in order, and return when the API answers."""
        from weft.db import migrate

        os.environ.update({"WEFT_HOME": str(self.settings.home_dir)})
        migrate()
        prefect = prefect_cli()
        self.spawn("prefect-server", [prefect, "server", "start", "--host", "127.0.0.1",
                                      "--port", str(self.settings.prefect_port)])
        self.wait_http("prefect-server", f"{self.settings.prefect_api}/health")

        self.register()

        local_pools = [pools.CPU, pools.GPU] if gpu_visible() else [pools.CPU]
        from weft.clusters import report_hardware

        for pool in local_pools:
            report_hardware(pool)
            self.spawn(f"worker-{pool}", [prefect, "worker", "start", "--pool", pool, "--type", "process"])
        if self.with_api:
            self.spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", self.settings.api_host,
                               "--port", str(self.settings.api_port)])
            self.wait_http("api", f"{self.api_url}/")

    def register(self) -> None:
        """Work pools, the result-storage block and the deployments, by `python -m deployments.register`
        (a child process: weft's core imports no deployment or block code)."""
        result = subprocess.run([sys.executable, "-m", "deployments.register"], cwd=PROJECT_DIR, env=self.env(),
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"registering the deployments failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    def stop(self) -> None:
        """Stop the children: workers with SIGINT, the API and server with SIGTERM; kill stragglers."""
        order = [n for n in self.procs if n.startswith("worker")] + [n for n in ("api", "prefect-server") if n in self.procs]
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT if name.startswith("worker") else signal.SIGTERM)
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def serve_forever(self) -> None:
        """`weft up`: start, print the URLs, and stop everything on Ctrl-C or SIGTERM."""
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            self.start()
            print(f"weft is up (data in {self.settings.home_dir})")
            print(f"  Prefect UI : {self.ui_url}")
            print(f"  weft API   : {self.api_url}  (docs at {self.api_url}/docs)")
            print(f"  logs       : {self.log_dir}")
            print("Press Ctrl-C to stop.")
            while all(p.poll() is None for p in self.procs.values()):
                time.sleep(1)
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            print(f"stopping: {', '.join(dead)} exited (see {self.log_dir})")
        except KeyboardInterrupt:
            print("\nstopping weft ...")
        finally:
            self.stop()
