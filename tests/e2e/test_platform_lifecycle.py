"""`weft up` as a user runs it, stopped with Ctrl-C and started again: no replica or server outlives it,
the endpoint answers again without a redeploy, and a controller that stops is started again by `weft up`
and adopts the running replicas instead of starting new ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.e2e import LOCAL, local_steps, post_sequence, register, wait_status
from weft.net import free_port

pytestmark = pytest.mark.e2e
UP_TIMEOUT = 180.0


class WeftUp:
    """`python -m weft.cli up` in a session of its own, on its own home and ports."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "WEFT_HOME": str(home), "WEFT_API_PORT": str(free_port()),
                    "WEFT_PREFECT_PORT": str(free_port()), "WEFT_REVISION_DRAIN_SECONDS": "5"}
        self.api_url = f"http://127.0.0.1:{self.env['WEFT_API_PORT']}"
        self.prefect_api = f"http://127.0.0.1:{self.env['WEFT_PREFECT_PORT']}/api"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.home.parent / f"weft-up-{self.starts}.log"

    def start(self) -> float:
        """Start it and wait for "Press Ctrl-C"; returns the seconds that took."""
        self.starts += 1
        begun = time.monotonic()
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "weft.cli", "up"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while "Press Ctrl-C to stop." not in self.log.read_text():
            assert self.proc.poll() is None, f"weft up exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() - begun < UP_TIMEOUT, f"weft up did not come up: {self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        return time.monotonic() - begun

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C, as a terminal sends it; returns the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def processes(self) -> list[str]:
        """Command lines of every process that runs with this home (weft up's children inherit it)."""
        marker = f"WEFT_HOME={self.home}".encode()
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker in environ.read_bytes().split(b"\0"):
                    found.append((environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
            except OSError:
                continue
        return found

    def kill_all(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if f"WEFT_HOME={self.home}".encode() in environ.read_bytes().split(b"\0"):
                    os.kill(int(environ.parent.name), signal.SIGKILL)
            except OSError:
                continue


@pytest.fixture(scope="module")
def weft_up(tmp_path_factory) -> Iterator[WeftUp]:
    up = WeftUp(tmp_path_factory.mktemp("lifecycle") / "home")
    try:
        yield up
    finally:
        if up.proc and up.proc.poll() is None:
            up.interrupt()
        up.kill_all()  # only if a failed test left something behind


def first_200(api: httpx.Client, headers: dict[str, str], body: dict, timeout: float) -> float:
    """Seconds until a completion answers 200 (retrying 503s and refused connections)."""
    begun = time.monotonic()
    while True:
        try:
            r = api.post("/v1/completions", headers=headers, json=body)
            if r.status_code == 200:
                return time.monotonic() - begun
            assert r.status_code == 503, r.text
        except httpx.TransportError:
            pass
        assert time.monotonic() - begun < timeout, "the endpoint did not answer"
        time.sleep(0.5)


def controller_runs(up: WeftUp) -> list[str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from weft import runs
    from weft.serving.controller import DEPLOYMENT

    with temporary_settings({PREFECT_API_URL: up.prefect_api}):
        return runs.active_runs(DEPLOYMENT)


def cancel_run(up: WeftUp, flow_run_id: str) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from weft import runs

    with temporary_settings({PREFECT_API_URL: up.prefect_api}):
        runs.cancel(flow_run_id)


def test_ctrl_c_stops_every_replica_and_the_next_start_serves_without_a_redeploy(weft_up, tiny_model_dir):
    up = weft_up
    print(f"weft up: ready after {up.start():.1f} s")
    api = httpx.Client(base_url=up.api_url, timeout=60)
    headers = register(api, "erin")
    body = post_sequence(api, headers, LOCAL, local_steps("disk", str(tiny_model_dir), name="tiny lifecycle"))
    assert wait_status(api, headers, body["workflow_id"], {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    model_id = next(m["id"] for m in api.get("/api/v1/models", headers=headers).json()["data"]
                    if m["name"] == "tiny lifecycle")
    r = api.post(f"/api/v1/models/{model_id}/deploy", headers=headers,
                 json={"endpoint_name": "Lifecycle Check", "instance_count": 1})
    assert r.status_code == 202, r.text
    endpoint_id = r.json()["id"]
    assert wait_status(api, headers, r.json()["workflow_id"], {"COMPLETED", "FAILED"}, timeout=300)["status"] \
        == "COMPLETED"
    completion = {"model": "lifecycle-check", "prompt": "hello", "max_tokens": 2, "temperature": 0}
    assert api.post("/v1/completions", headers=headers, json=completion).status_code == 200

    def replicas() -> set[str]:
        view = api.get(f"/api/v1/endpoints/{endpoint_id}", headers=headers).json()
        return {w["id"] for w in view["workers"] if w["state"] in ("starting", "healthy")}

    # the controller's run is cancelled: `weft up` starts another, which adopts the running replica
    serving = replicas()
    [controller] = controller_runs(up)
    cancel_run(up, controller)
    deadline = time.monotonic() + 90
    while not (others := [r for r in controller_runs(up) if r != controller]):
        assert time.monotonic() < deadline, "weft up did not start a new endpoint controller"
        time.sleep(1)
    print(f"new controller run {others[0]} after the cancel of {controller}")
    time.sleep(10)  # a few passes of the new controller
    assert replicas() == serving
    assert api.post("/v1/completions", headers=headers, json=completion).status_code == 200

    # Ctrl-C: nothing with this home is left running
    assert up.interrupt() == 0
    assert up.processes() == []

    # started again: the endpoint serves without a redeploy
    began = time.monotonic()
    up.start()
    api.close()
    api = httpx.Client(base_url=up.api_url, timeout=60)
    waited = first_200(api, headers, completion, timeout=300)
    print(f"after restarting weft up: first 200 {time.monotonic() - began:.1f} s after the start "
          f"({waited:.1f} s after it printed its URLs)")
    assert replicas() and replicas().isdisjoint(serving)
    events = api.get(f"/api/v1/endpoints/{endpoint_id}", headers=headers).json()["events"]
    assert any(e["action"] == "replica_started" and "replacing" in e["reason"] for e in events)

    assert up.interrupt() == 0
    assert up.processes() == []
    api.close()
