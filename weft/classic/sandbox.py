"""Run code from an uploaded model's environment away from weft: a scrubbed environment (no database URL,
storage keys or tokens), its own working folder, a hard memory limit (RLIMIT_DATA: allocations beyond it
fail inside the process), no core dumps, death with its parent, and, for one-shot inspection, a CPU-time
limit and no network (a private network namespace, where the kernel allows one)."""

from __future__ import annotations

import resource
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from weft.serving.launch import die_with_parent
from weft.settings import get_settings
from weft.storage import get_storage

RUNTIME = Path(__file__).resolve().parent / "runtime"  # the scripts that run inside the environment


@contextmanager
def workdir(file_key: str, file_name: str) -> Iterator[Path]:
    """A fresh working folder holding a copy of the stored model file (its path is yielded); removed after."""
    root = get_settings().home_dir / "sandboxes"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root))
    try:
        with get_storage().local(file_key) as path:
            yield Path(shutil.copy(path, work / file_name))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def runtime_args(script: str, model_path: Path, framework: str, unsafe_keras: bool, *extra: str) -> list[str]:
    """The arguments of one of runtime/'s scripts for the model file."""
    return [str(RUNTIME / script), "--model", str(model_path), "--framework", framework, *extra,
            *(["--unsafe-keras"] if unsafe_keras else [])]


def clean_env(env_dir: Path, workdir: Path) -> dict[str, str]:
    """The only variables the sandboxed process sees."""
    return {"PATH": f"{env_dir / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir),
            "TMPDIR": str(workdir), "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "KERAS_BACKEND": "torch", "VIRTUAL_ENV": str(env_dir)}


def limits(memory_mb: int, cpu_seconds: int | None = None) -> Callable[[], None]:
    """The child's limits, set between fork and exec."""
    def apply() -> None:
        die_with_parent()
        data = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_DATA, (data, data))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if cpu_seconds:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    return apply


@cache
def no_network_prefix() -> list[str]:
    """`unshare --net` where this process may create a network namespace (root, or user namespaces
    allowed), else nothing (the inspection then runs with the machine's network)."""
    try:
        ok = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return ["unshare", "--net"] if ok else []


def run(env_dir: Path, workdir: Path, args: list[str], *, memory_mb: int, timeout: float,
        network: bool = False) -> subprocess.CompletedProcess:
    """Run `python args...` of the environment to completion under the limits."""
    cmd = [*([] if network else no_network_prefix()), str(env_dir / "bin" / "python"), *args]
    return subprocess.run(cmd, cwd=workdir, env=clean_env(env_dir, workdir), capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limits(memory_mb, int(timeout) + 1))


def popen(env_dir: Path, workdir: Path, args: list[str], *, memory_mb: int, log_file: Path) -> subprocess.Popen:
    """Start `python args...` of the environment (a server: it keeps the network) under the memory limit."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        return subprocess.Popen([str(env_dir / "bin" / "python"), *args], cwd=workdir,
                                env=clean_env(env_dir, workdir), stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=limits(memory_mb))
