"""One uv environment per distinct requirements file, built on the machine that needs it and reused by
every deployment with the same requirements (the hash of its normalised lines, the Python version and
the torch constraint). Builds go to a temporary folder renamed into place, under a file lock, so a
half-built environment is never used and two deploys of the same requirements build it once. Bytecode
is compiled at build time: the sandbox never writes into the shared environment, and without it every
replica would compile its imports again (Keras 3 on torch: 24 s → 5 s per process here)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from weft.settings import get_settings

READY = "weft-env.json"  # written last: an environment without it is not used
MAX_LINES = 200


class RequirementsError(ValueError):
    """The requirements file itself is not acceptable (the client's input)."""


class BuildFailed(RuntimeError):
    """The installer could not build the environment; the message is the installer's."""


@dataclass(frozen=True)
class Env:
    path: Path
    key: str
    built: bool  # built now (False: it existed)
    seconds: float
    packages: dict[str, str]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def parse_requirements(text: str) -> list[str]:
    """The requirement lines, normalised and sorted. Options (`-r`, `--index-url`, `-e` ...) and direct
    references (URLs, paths) are refused: packages come from the configured index and wheel folders only."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise RequirementsError(f"line {number}: options such as {line.split()[0]!r} are not allowed; list "
                                    "packages only (name and version specifier)")
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(f"line {number}: {line!r} is not a requirement: {exc}") from exc
        if req.url:
            raise RequirementsError(f"line {number}: direct references ({req.url}) are not allowed; name a "
                                    "package from the index")
        lines.append(str(req))
    if len(lines) > MAX_LINES:
        raise RequirementsError(f"{len(lines)} requirements: at most {MAX_LINES}")
    return sorted(set(lines), key=str.lower)


@cache
def find_links() -> list[str]:
    """Wheel folders uv may install from: the setting, else pip's global.find-links (where this machine
    keeps the CPU wheel of torch; uv does not read pip's configuration)."""
    configured = get_settings().find_links
    if configured is not None:
        return configured
    if os.environ.get("PIP_FIND_LINKS"):
        return os.environ["PIP_FIND_LINKS"].split()
    done = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                          capture_output=True, text=True)
    return done.stdout.split() if done.returncode == 0 else []


def constraints() -> list[str]:
    """torch pinned to the build installed here when it is a CPU wheel: an unpinned torch from the index
    pulls gigabytes of CUDA packages."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return []
    return [f"torch=={version}"] if version.endswith("+cpu") else []


def env_key(lines: list[str]) -> str:
    """The environment's name: a hash of what it is built from."""
    basis = json.dumps({"python": sys.version_info[:2], "requirements": lines, "constraints": constraints()})
    return hashlib.sha256(basis.encode()).hexdigest()[:24]


def uv_binary() -> str:
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise BuildFailed("uv is not installed where weft runs (pip install uv)")
    return found


def ready(path: Path) -> dict | None:
    marker = path / READY
    return json.loads(marker.read_text()) if marker.exists() else None


def ensure_env(lines: list[str]) -> Env:
    """The environment of `lines`: the existing one, or built now. BuildFailed with the installer's message
    when a requirement cannot be resolved or installed (nothing is left behind)."""
    root = get_settings().envs_root
    root.mkdir(parents=True, exist_ok=True)
    key = env_key(lines)
    path = root / key
    begun = time.monotonic()
    with (root / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (info := ready(path)) is not None:
            return Env(path, key, False, time.monotonic() - begun, info["packages"])
        shutil.rmtree(path, ignore_errors=True)  # a build that died before its marker
        packages = build(path, lines)
    return Env(path, key, True, time.monotonic() - begun, packages)


def build(path: Path, lines: list[str]) -> dict[str, str]:
    work = path.parent / f".building-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        uv = uv_binary()
        run([uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(work)])
        (work / "requirements.txt").write_text("\n".join(lines) + "\n")
        (work / "constraints.txt").write_text("\n".join(constraints()) + "\n")
        links = [arg for folder in find_links() for arg in ("--find-links", folder)]
        run([uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(work / "bin" / "python"), "-r",
             str(work / "requirements.txt"), "-c", str(work / "constraints.txt"), *links])
        frozen = run([uv, "pip", "freeze", "--python", str(work / "bin" / "python")])
        packages = dict(line.split("==", 1) for line in frozen.splitlines() if "==" in line)
        (work / READY).write_text(json.dumps({"requirements": lines, "packages": packages}, indent=1))
        work.rename(path)
        return packages
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(cmd: list[str]) -> str:
    timeout = get_settings().env_build_timeout_seconds
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BuildFailed(f"the environment build took more than {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BuildFailed((done.stderr or done.stdout).strip()[-3000:] or f"{cmd[1]} exited {done.returncode}")
    return done.stdout
