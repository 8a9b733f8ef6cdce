"""The serving control plane's reaction times on the real platform (`weft up`): how long from a load step
to a new replica serving, from a request sent to an endpoint scaled to zero to its first token (a cold
start), from a SIGKILLed replica server to its healthy replacement, and from restarting `weft up` to the
first 200.

What runs: weft.platform.Platform on free ports in a temporary WEFT_HOME (removed at the end unless
--keep), with short autoscaling windows (--stable, --panic); a registered user; the tiny test model (and
SmolLM2-135M-Instruct when its folder exists: `weft demo-model` builds it under
$WEFT_HOME/demo-models/, or pass --smollm DIR) onboarded from disk through the step API and deployed
with POST /api/v1/models/{id}/deploy. Every figure is measured from the client's side through the
gateway; the controller's own view (GET /api/v1/endpoints/{id}) tells when a replica is wanted and healthy.

  load step      1 replica (min 1, max 2, target 1 request in flight), then --clients clients at once:
                 until the autoscaler wants a 2nd replica, until it is healthy, until it answered a request
  cold start     min_instances 0, idle until no replica is left, then one streamed completion: seconds to
                 its first token (and to its end), next to the same request on the warm replica
  replace        2 replicas and a steady stream of requests; SIGKILL one server: seconds until the
                 replacement is healthy, and the requests of the stream that failed
  restart        Platform.stop() then Platform.start() on the same home (min_instances 1): seconds from
                 the start call to the first 200 (see `restart_to_first_200`)

Usage: .venv/bin/python benchmarks/serving_control.py [--smollm DIR] [--clients 4] [--only scale,cold] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from weft.testing.polling import ok, wait_for  # noqa: E402  (the repository's weft when run from a checkout)

LOCAL = "/api/v1/models/local-model-workflow"
LIVE = ("starting", "healthy", "draining")
PARTS = ("scale", "replace", "cold", "smollm", "restart")


def server_pid(url: str) -> int:
    """The replica server process listening on `url`'s port."""
    port = url.rsplit(":", 1)[1].encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"weft.serving.server" in args and port in args:
            return int(cmdline.parent.name)
    raise RuntimeError(f"no server process on port {port.decode()}")


class Load:
    """`clients` threads sending completions back to back until stopped; the status of each answer."""

    def __init__(self, base_url: str, headers: dict[str, str], body: dict, clients: int) -> None:
        self.base_url, self.headers, self.body = base_url, headers, body
        self.statuses: list[int] = []
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def client(self) -> None:
        import httpx

        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=300) as http:
            while not self.halt.is_set():
                try:
                    self.statuses.append(http.post("/v1/completions", json=self.body).status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)

    def stop(self) -> dict[int, int]:
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=320)
        return dict(Counter(s for s in self.statuses if s != 200))


class Bench:
    """The platform, one user with an API key, and helpers over its endpoints."""

    def __init__(self, home: Path, overrides: dict[str, Any]) -> None:
        import httpx

        from weft.net import free_port
        from weft.platform import Platform
        from weft.settings import Settings

        self.settings = Settings(home=home, api_port=free_port(), prefect_port=free_port(), **overrides)
        self.platform = Platform(settings=self.settings)
        t = time.perf_counter()
        self.api = httpx.Client(base_url=self.platform.api_url, timeout=60)
        try:
            self.platform.start()
            self.start_seconds = time.perf_counter() - t
            body = ok(self.api.post("/api/v1/auth/register", json={
                "email": "bench@example.com", "username": "bench", "password": "weft-bench-password"}), 201)
            self.headers = {"Authorization": f"Bearer {body['access_token']}"}
            self.key = {"Authorization": f"Bearer {self._api_key()}"}
        except BaseException:
            self.close()
            raise

    def _api_key(self) -> str:
        r = self.api.post("/api/v1/auth/api-keys", headers=self.headers, json={"name": "bench"})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"api key -> {r.status_code}: {r.text[:500]}")
        return r.json()["key"]

    def onboard(self, model_dir: Path, name: str) -> str:
        steps = [
            {"workflow_total_steps": 6, "step_number": 1, "trigger_workflow": False, "modality": "llm"},
            {"step_number": 2, "trigger_workflow": False, "provider_type": "disk"},
            {"step_number": 3, "trigger_workflow": False, "name": name, "uri": str(model_dir),
             "author": "weft-bench", "tags": [], "icon": None},
            {"step_number": 4, "trigger_workflow": True, "proprietary_credential_id": None},
        ]
        workflow_id = None
        for step in steps:
            workflow_id = ok(self.api.post(LOCAL, headers=self.headers, json={
                **step, **({"workflow_id": workflow_id} if workflow_id else {})}))["workflow_id"]
        view = self.finished(workflow_id, 900)
        if view["status"] != "COMPLETED":
            raise RuntimeError(f"onboarding {name}: {view['status']}: {view.get('reason')}")
        models = ok(self.api.get("/api/v1/models", headers=self.headers, params={"limit": 100}))["data"]
        return next(m["id"] for m in models if m["name"] == name)

    def finished(self, workflow_id: str, timeout: float) -> dict:
        def done():
            view = ok(self.api.get(f"/api/v1/workflows/{workflow_id}", headers=self.headers))
            return view if view["status"] in ("COMPLETED", "FAILED", "CANCELLED") else None

        return wait_for(done, f"workflow {workflow_id}", timeout, poll=0.5)

    def deploy(self, model_id: str, name: str, **body) -> tuple[str, float]:
        t = time.perf_counter()
        out = ok(self.api.post(f"/api/v1/models/{model_id}/deploy", headers=self.headers,
                               json={"endpoint_name": name, **body}), 202)
        view = self.finished(out["workflow_id"], 900)
        if view["status"] != "COMPLETED":
            raise RuntimeError(f"deploy {name}: {view['status']}: {view.get('reason')}")
        return out["id"], time.perf_counter() - t

    def patch(self, endpoint_id: str, **body) -> None:
        ok(self.api.patch(f"/api/v1/deployments/{endpoint_id}", headers=self.headers, json=body))

    def view(self, endpoint_id: str) -> dict:
        return ok(self.api.get(f"/api/v1/endpoints/{endpoint_id}", headers=self.headers))

    def workers(self, endpoint_id: str, states=LIVE) -> list[dict]:
        return [w for w in self.view(endpoint_id)["workers"] if w["state"] in states]

    def served_by(self, endpoint_id: str, since: float) -> set[str]:
        """Replicas that answered the endpoint's requests recorded after wall time `since`."""
        from datetime import UTC, datetime

        from sqlmodel import select

        from weft.db import session_scope
        from weft.tables import InferenceRecord

        start = datetime.fromtimestamp(since, UTC)
        with session_scope() as s:
            return {r.replica_id for r in s.exec(select(InferenceRecord).where(
                InferenceRecord.endpoint_id == endpoint_id, InferenceRecord.created_at >= start,
                InferenceRecord.status_code == 200)) if r.replica_id}

    def first_token(self, slug: str, prompt: str, max_tokens: int, timeout: float = 900) -> tuple[float, float]:
        """One streamed completion through the gateway: seconds to its first token, and to its end (an
        error when the stream ends without `data: [DONE]`)."""
        import httpx

        body = {"model": slug, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        t = time.perf_counter()
        first = None
        with httpx.stream("POST", f"{self.platform.api_url}/v1/completions", headers=self.key, json=body,
                          timeout=timeout) as r:
            if r.status_code != 200:
                raise RuntimeError(f"streamed completion -> {r.status_code}: {r.read()[:500]!r}")
            done = False
            for line in r.iter_lines():
                done = done or line.strip() == "data: [DONE]"
                if first is None and line.startswith("data:") and line.strip() != "data: [DONE]":
                    chunk = json.loads(line[5:])
                    if any(c.get("text") for c in chunk.get("choices", [])):
                        first = time.perf_counter() - t
        end = time.perf_counter() - t
        if not done:
            raise RuntimeError(f"the stream ended after {end:.1f} s without [DONE]")
        return (first if first is not None else end), end

    def close(self) -> None:
        try:
            self.api.close()
        finally:
            self.platform.stop()


def load_step(bench: Bench, model_id: str, clients: int) -> dict[str, float]:
    """1 replica, then `clients` clients at once: seconds until a 2nd replica is wanted, healthy, serving."""
    endpoint, deployed = bench.deploy(model_id, "bench-scale", auto_scaling={
        "min_instances": 1, "max_instances": 2, "target_concurrency": 1})
    first = {w["id"] for w in wait_for(lambda: bench.workers(endpoint, ("healthy",)), "1 healthy replica", 120)}
    slug = bench.view(endpoint)["model"]
    body = {"model": slug, "prompt": "tell me a long story about the oil", "max_tokens": 64, "temperature": 0}
    wall, t = time.time(), time.perf_counter()
    load = Load(bench.platform.api_url, bench.key, body, clients)
    try:
        wait_for(lambda: len(bench.workers(endpoint)) > 1, "a 2nd replica wanted", 300)
        wanted = time.perf_counter() - t
        new = wait_for(lambda: [w["id"] for w in bench.workers(endpoint, ("healthy",)) if w["id"] not in first],
                       "the 2nd replica healthy", 600)
        healthy = time.perf_counter() - t
        wait_for(lambda: set(new) & bench.served_by(endpoint, wall), "the 2nd replica serving", 120)
        serving = time.perf_counter() - t
    finally:
        failed = load.stop()
    return {"endpoint": endpoint, "deploy": deployed, "wanted": wanted, "healthy": healthy, "serving": serving,
            "requests": len(load.statuses), "failed": sum(failed.values())}


def replace_killed(bench: Bench, endpoint: str) -> dict[str, float]:
    """2 replicas and a steady stream; SIGKILL one server: seconds until its replacement is healthy."""
    bench.patch(endpoint, min_instances=2, max_instances=2)
    workers = wait_for(lambda: (w := bench.workers(endpoint, ("healthy",))) and len(w) == 2
                       and len(bench.workers(endpoint)) == 2 and w, "2 healthy replicas", 600)
    before, victim = {w["id"] for w in workers}, workers[0]
    slug = bench.view(endpoint)["model"]
    stream = Load(bench.platform.api_url, bench.key, {"model": slug, "prompt": "check the oil level",
                                                      "max_tokens": 8, "temperature": 0}, 1)
    try:
        time.sleep(2)
        t = time.perf_counter()
        os.kill(server_pid(victim["url"]), signal.SIGKILL)

        def replaced():
            live = bench.workers(endpoint)
            return len(live) == 2 and all(w["state"] == "healthy" for w in live) and \
                any(w["id"] not in before for w in live)

        wait_for(replaced, "the replacement healthy", 600)
        took = time.perf_counter() - t
    finally:
        failed = stream.stop()
    return {"replace": took, "requests": len(stream.statuses), "failed": sum(failed.values())}


def cold_start(bench: Bench, endpoint: str, label: str) -> dict[str, float]:
    """Scale to zero, then one streamed completion: seconds to its first token; then the same warm."""
    bench.patch(endpoint, min_instances=0, max_instances=1, timeout_seconds=900)
    t = time.perf_counter()
    wait_for(lambda: not bench.workers(endpoint), f"{label}: scaled to zero", 600, poll=1)
    idle = time.perf_counter() - t
    slug = bench.view(endpoint)["model"]
    cold_first, cold_end = bench.first_token(slug, "wake up and check the oil", 16)
    warm_first, warm_end = bench.first_token(slug, "wake up and check the oil", 16)
    metrics = ok(bench.api.get(f"/api/v1/metrics/{endpoint}", headers=bench.headers,
                               params={"hours": 1, "resolution": "1h"}))["metrics"]
    if metrics["cold_starts"] != 1:  # the warm request found no replica: say what the controller did
        for event in reversed(bench.view(endpoint)["events"][:12]):
            print(f"  {event['created_at']} {event['version'] or '':3s} {event['action']}: {event['reason']}")
    return {"to_zero": idle, "cold_first": cold_first, "cold_end": cold_end, "warm_first": warm_first,
            "warm_end": warm_end, "cold_starts": metrics["cold_starts"]}


def restart_to_first_200(bench: Bench, endpoint: str) -> dict[str, float]:
    """THE SLOT for "time to first 200 after restarting `weft up`": stop the whole platform (the replicas
    go with their worker), start it again on the same home and settings, and send one completion
    (held by the gateway until a replica serves). Seconds from the start call to the platform being up,
    and to the first 200. Raises when the platform cannot be started again on the same home."""
    import httpx

    bench.patch(endpoint, min_instances=1, max_instances=1, timeout_seconds=900)
    wait_for(lambda: bench.workers(endpoint, ("healthy",)), "1 healthy replica before the restart", 600)
    slug = bench.view(endpoint)["model"]
    bench.api.close()
    bench.platform.stop()
    t = time.perf_counter()
    bench.platform.start()
    up = time.perf_counter() - t
    bench.api = httpx.Client(base_url=bench.platform.api_url, timeout=60)
    body = {"model": slug, "prompt": "are you back?", "max_tokens": 4, "temperature": 0}
    statuses: Counter = Counter()

    def answered():
        try:
            r = bench.api.post("/v1/completions", headers=bench.key, json=body, timeout=900)
        except httpx.HTTPError:
            statuses[0] += 1
            return False
        statuses[r.status_code] += 1
        return r.status_code == 200

    wait_for(answered, "the first 200 after the restart", 900, poll=0.5)
    return {"up": up, "first_200": time.perf_counter() - t, "before": sum(v for k, v in statuses.items() if k != 200)}


def cold_row(label: str, cold: dict[str, Any]) -> tuple[str, str, str]:
    return (f"cold start → first token ({label})", f"{cold['cold_first']:.1f} s",
            f"end {cold['cold_end']:.1f} s; warm first token {1000 * cold['warm_first']:.0f} ms "
            f"(×{cold['cold_first'] / cold['warm_first']:.0f}); cold_starts={cold['cold_starts']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_smollm = Path(os.environ.get("WEFT_HOME", ".weft")).expanduser() / "demo-models" / "SmolLM2-135M-Instruct"
    parser.add_argument("--smollm", type=Path, default=default_smollm, help="SmolLM2-135M-Instruct folder")
    parser.add_argument("--clients", type=int, default=4, help="clients of the load step (target 1 per replica)")
    parser.add_argument("--stable", type=float, default=15.0, help="autoscale stable window, seconds")
    parser.add_argument("--panic", type=float, default=3.0, help="autoscale panic window, seconds")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to measure (default: all of {','.join(PARTS)}); "
                             "`restart` is restart_to_first_200")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts {sorted(parts - set(PARTS))}: choose from {','.join(PARTS)}")

    tmp = Path(tempfile.mkdtemp(prefix="weft-bench-serving-"))
    home = tmp / "home"
    smollm = args.smollm.resolve() if (args.smollm / "config.json").is_file() else None
    roots = [tmp, *([smollm.parent] if smollm else [])]
    os.environ.update({"WEFT_HOME": str(home), "WEFT_DISK_ROOTS": json.dumps([str(r) for r in roots]),
                       "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"})
    from weft.settings import get_settings
    from weft.testing.tiny_model import build_tiny_model

    get_settings.cache_clear()
    overrides = {"autoscale_stable_seconds": args.stable, "autoscale_panic_seconds": args.panic,
                 "replica_drain_seconds": 1, "revision_drain_seconds": 5, "rate_limit_per_minute": 1_000_000}
    tiny_dir = build_tiny_model(tmp / "models" / "tiny-llama")
    bench = None
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []
    try:
        bench = Bench(home, overrides)
        print(f"platform up in {bench.start_seconds:.1f} s; windows: stable {args.stable:g} s, panic {args.panic:g} s")
        tiny = bench.onboard(tiny_dir, "tiny")
        endpoint = None
        if "scale" in parts:
            step = load_step(bench, tiny, args.clients)
            endpoint = step["endpoint"]
            print(f"load step ({args.clients} clients): {step}")
            rows += [("deploy 1 replica → active", f"{step['deploy']:.1f} s", ""),
                     (f"load step ({args.clients} clients) → 2nd replica wanted", f"{step['wanted']:.1f} s", ""),
                     ("load step → 2nd replica healthy", f"{step['healthy']:.1f} s", ""),
                     ("load step → 2nd replica serving", f"{step['serving']:.1f} s",
                      f"{step['failed']} of {step['requests']} requests failed")]
        if endpoint is None and parts & {"replace", "cold", "restart"}:
            endpoint, deployed = bench.deploy(tiny, "bench-scale", auto_scaling={
                "min_instances": 1, "max_instances": 2, "target_concurrency": 1})
            rows.append(("deploy 1 replica → active", f"{deployed:.1f} s", ""))

        if "replace" in parts:
            killed = replace_killed(bench, endpoint)
            print(f"replace: {killed}")
            rows.append(("SIGKILL a replica → replacement healthy", f"{killed['replace']:.1f} s",
                         f"{killed['failed']} of {killed['requests']} requests failed"))

        if "cold" in parts:
            cold = cold_start(bench, endpoint, "tiny")
            print(f"cold start (tiny): {cold}")
            rows += [("idle → scaled to zero (tiny)", f"{cold['to_zero']:.1f} s", f"stable window {args.stable:g} s"),
                     cold_row("tiny", cold)]
        if "smollm" in parts and smollm:
            smol = bench.onboard(smollm, "smollm2")
            smol_endpoint, deployed = bench.deploy(smol, "bench-smollm2",
                                                   auto_scaling={"min_instances": 0, "max_instances": 1})
            rows.append(("deploy SmolLM2-135M → active", f"{deployed:.1f} s", ""))
            cold = cold_start(bench, smol_endpoint, "SmolLM2-135M")
            print(f"cold start (SmolLM2-135M): {cold}")
            rows.append(cold_row("SmolLM2-135M", cold))
        elif "smollm" in parts:
            notes.append(f"SmolLM2-135M skipped: no model folder at {args.smollm} (build it with `weft demo-model`, "
                         "or pass --smollm DIR)")

        if "restart" in parts:
            try:
                again = restart_to_first_200(bench, endpoint)
                print(f"restart: {again}")
                rows += [("restart weft up → platform up", f"{again['up']:.1f} s", ""),
                         ("restart weft up → first 200", f"{again['first_200']:.1f} s",
                          f"{again['before']} answers before it")]
            except Exception as exc:  # a platform that cannot start again on its home: say so, measure the rest
                notes.append(f"restart not measured: {type(exc).__name__}: {str(exc)[:300]}")
        else:
            notes.append("restart not measured (not in --only)")
    finally:
        if bench is not None:
            bench.close()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'what':{width}s} | {'seconds':>9s} | notes")
    print(f"{'-' * width}-+-{'-' * 9}-+------")
    for what, value, note in rows:
        print(f"{what:{width}s} | {value:>9s} | {note}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
