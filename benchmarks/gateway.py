"""Gateway overhead: latency through weft's gateway minus latency straight to the replica, at 1 and
32 concurrent clients, and requests/s both ways, in one run.

The replica is weft's transformers server (the tiny test model by default) started the way a
serve_replica run starts it; the API runs as its own uvicorn process with the endpoint and replica
registered in a temporary WEFT_HOME. Requests are 1-token completions so the model's time is small.

Usage: .venv/bin/python benchmarks/gateway.py [--model DIR] [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def load(url: str, headers: dict[str, str], body: dict, total: int, concurrency: int) -> tuple[list[float], float]:
    import httpx

    latencies: list[float] = []
    queue = list(range(total))
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            while queue:
                queue.pop()
                start = time.perf_counter()
                r = await client.post(url, json=body, headers=headers)
                latencies.append((time.perf_counter() - start) * 1000)
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="weft-bench-gw-"))
    os.environ.update({"WEFT_HOME": str(tmp / "home"), "WEFT_RATE_LIMIT_PER_MINUTE": "1000000",
                       "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"})
    import httpx

    from weft.clock import utcnow
    from weft.db import migrate, session_scope
    from weft.net import free_port
    from weft.serving import launch
    from weft.tables import Endpoint, Model, Replica

    model_dir = args.model
    if model_dir is None:
        from weft.testing.tiny_model import build_tiny_model

        model_dir = build_tiny_model(tmp / "tiny")
    migrate()
    spec = launch.ServerSpec(model_dir=str(model_dir), served_name="bench", port=free_port("0.0.0.0"))
    replica_url = f"http://127.0.0.1:{spec.port}"
    server = launch.start(spec, tmp / "replica.log")
    api_port = free_port("0.0.0.0")
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(api_port),
                            "--log-level", "warning"], cwd=ROOT, env=os.environ.copy())
    stop = threading.Event()
    try:
        launch.wait_ready(server, replica_url, 300, tmp / "replica.log")
        api_url = f"http://127.0.0.1:{api_port}"
        for _ in range(100):
            try:
                httpx.get(f"{api_url}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        registered = httpx.post(f"{api_url}/api/v1/auth/register", json={
            "email": "b@example.com", "username": "bench", "password": "correct-horse-battery"}).json()
        headers, user_id = {"Authorization": f"Bearer {registered['access_token']}"}, registered["user"]["id"]
        with session_scope() as s:
            model = Model(user_id=user_id, name="bench", provider_type="disk")
            endpoint = Endpoint(user_id=user_id, model_id=model.id, name="bench", status="active")
            replica = Replica(endpoint_id=endpoint.id, url=replica_url, state="healthy", last_seen=utcnow())
            s.add_all([model, endpoint, replica])
            replica_id = replica.id

        def heartbeat() -> None:  # what the serve_replica flow does while the replica is healthy
            while not stop.wait(1.0):
                with session_scope() as s:
                    row = s.get(Replica, replica_id)
                    row.last_seen = utcnow()
                    s.add(row)

        threading.Thread(target=heartbeat, daemon=True).start()
        body = {"model": "bench", "prompt": "check the oil level", "max_tokens": 1, "temperature": 0}
        asyncio.run(load(f"{replica_url}/v1/completions", {}, body, 20, 1))  # warm-up both paths
        asyncio.run(load(f"{api_url}/v1/completions", headers, body, 20, 1))
        print(f"model: {Path(model_dir).name}; {args.requests} one-token completions per run")
        print(f"{'clients':>7} | {'direct p50':>10} {'p99':>8} {'req/s':>7} | {'gateway p50':>11} {'p99':>8} "
              f"{'req/s':>7} | {'added p50':>9} {'added p99':>9}")
        for concurrency in (1, 32):
            direct, direct_rps = asyncio.run(load(f"{replica_url}/v1/completions", {}, body, args.requests, concurrency))
            via, via_rps = asyncio.run(load(f"{api_url}/v1/completions", headers, body, args.requests, concurrency))
            d50, d99, g50, g99 = (percentile(direct, 50), percentile(direct, 99), percentile(via, 50),
                                  percentile(via, 99))
            print(f"{concurrency:>7} | {d50:>8.2f}ms {d99:>6.1f}ms {direct_rps:>7.1f} | {g50:>9.2f}ms {g99:>6.1f}ms "
                  f"{via_rps:>7.1f} | {g50 - d50:>7.2f}ms {g99 - d99:>7.1f}ms")
        print(f"(direct mean {statistics.mean(direct):.2f} ms at 32 clients; the replica runs one generate at a time)")
    finally:
        stop.set()
        api.terminate()
        server.terminate()
        api.wait(10)
        server.wait(10)


if __name__ == "__main__":
    main()
