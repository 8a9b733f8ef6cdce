"""Start one OpenAI-compatible server process for a model: vLLM where CUDA and the `[gpu]` extra are
present, else weft's transformers server (weft.serving.server). The process dies with its parent
(PR_SET_PDEATHSIG), so cancelling or killing the replica's flow run takes the server down with it."""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

PR_SET_PDEATHSIG = 1
CLASSIC_ENGINE = "classic"  # replicas of an uploaded classic model (weft.classic), not an LLM server


def engine_available() -> str:
    """`vllm` when it can run here, else `transformers`."""
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:
        cuda = False
    return "vllm" if cuda and importlib.util.find_spec("vllm") and shutil.which("vllm") else "transformers"


def die_with_parent() -> None:
    """SIGTERM this (child) process when its parent exits; call it between fork and exec."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerSpec(BaseModel):
    model_dir: str
    served_name: str
    adapter_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    engine: str = "transformers"
    max_batch: int | None = None  # sequences decoded together (the engine's default when None)


def command(spec: ServerSpec) -> list[str]:
    if spec.engine == "vllm":
        cmd = ["vllm", "serve", spec.model_dir, "--host", spec.host, "--port", str(spec.port)]
        if spec.max_batch:
            cmd += ["--max-num-seqs", str(spec.max_batch)]
        if spec.adapter_dir:  # the endpoint name answers with the adapter; the base keeps its folder name
            return [*cmd, "--enable-lora", "--lora-modules", f"{spec.served_name}={spec.adapter_dir}"]
        return [*cmd, "--served-model-name", spec.served_name]
    cmd = [sys.executable, "-m", "weft.serving.server", "--model", spec.model_dir, "--name", spec.served_name,
           "--host", spec.host, "--port", str(spec.port)]
    if spec.max_batch:
        cmd += ["--max-batch", str(spec.max_batch)]
    if spec.adapter_dir:
        cmd += ["--adapter", f"{spec.served_name}-adapter={spec.adapter_dir}", "--default-adapter",
                f"{spec.served_name}-adapter"]
    return cmd


def start(spec: ServerSpec, log_file: Path) -> subprocess.Popen:
    """Spawn the server (stdout/stderr to `log_file`); it exits when this process does."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    out = log_file.open("ab")
    return subprocess.Popen(command(spec), stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def reported_batch(url: str) -> int | None:
    """The batch limit the server reports on /health (weft's server does; vLLM's /health has no body)."""
    try:
        return int(httpx.get(f"{url}/health", timeout=2.0).json()["max_batch"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def wait_ready(proc: subprocess.Popen, url: str, timeout: float, log_file: Path) -> None:
    """Until /health answers; a server that exits or stays silent is an error quoting its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {tail(log_file)}")
        if healthy(url):
            return
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the server did not become healthy within {timeout:.0f} s: {tail(log_file)}")


def tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""
