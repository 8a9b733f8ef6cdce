"""Classic-model deployments (document 001) on the real platform: how long an upload takes to serve, and how
many predictions per second it serves next to calling the model in-process (the physical limit).

What runs: weft.platform.Platform on free ports in a temporary WEFT_HOME (removed at the end unless --keep);
a registered user; an iris RandomForest (20 trees) pickle with a requirements.txt pinning the versions
installed here (so uv installs from its package cache, as after `make install`).

  upload → active   POST /api/v1/deploy until GET /api/v1/deployments/{id} says active: first with weft's
                    environment for those requirements not built yet (cold: scan, uv build with bytecode,
                    sandboxed inspection, replica), then a second deployment of the same requirements
                    (warm: the environment is reused)
  predictions/s     single examples, --seconds per row, keep-alive clients: in-process `model.predict`
                    on 1 and 16 threads, then POST /api/v1/predict/{id} with 1 and 16 clients against one
                    replica (bounds pinned to 1 by PATCH; the server runs WEFT_CLASSIC_WORKERS threads)

Usage: .venv/bin/python benchmarks/classic_serving.py [--seconds 10] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from weft.testing import classic_models as cm  # noqa: E402  (the repository's weft when run from a checkout)
from weft.testing.polling import ok  # noqa: E402

REQUIREMENTS = cm.pinned("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl")


def deploy(api, headers: dict[str, str], model: Path, name: str) -> tuple[str, float]:
    """The deployment's id and seconds from the upload to `active`."""
    begun = time.perf_counter()
    body = ok(api.post("/api/v1/deploy", headers=headers, data={"name": name},
                       files={"model_file": (model.name, model.read_bytes()),
                              "requirements_file": ("requirements.txt", REQUIREMENTS.encode())}), 202)
    while (dep := ok(api.get(f"/api/v1/deployments/{body['id']}", headers=headers)))["status"] != "active":
        if dep["status"] == "failed" or time.perf_counter() - begun > 600:
            raise RuntimeError(f"{name}: {dep['status']}: {dep['reason']}")
        time.sleep(0.2)
    return body["id"], time.perf_counter() - begun


def rate(make_call, clients: int, seconds: float) -> dict[str, Any]:
    """Each of `clients` threads makes its own call (`make_call()`, e.g. with its own connection) and runs it
    back to back for `seconds`: successful calls/s and latency percentiles (ms)."""
    latencies: list[float] = []
    errors = 0
    halt = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        nonlocal errors
        mine, bad = [], 0
        one = make_call()
        while not halt.is_set():
            t = time.perf_counter()
            if one():
                mine.append((time.perf_counter() - t) * 1000)
            else:
                bad += 1
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    halt.set()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {"per_second": len(latencies) / seconds, "errors": errors,
            "p50_ms": statistics.median(latencies) if latencies else None,
            "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput row")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="weft-bench-classic-"))
    os.environ.update({"WEFT_HOME": str(tmp / "home"), "DO_NOT_TRACK": "1"})
    import httpx

    from weft.net import free_port
    from weft.platform import Platform
    from weft.settings import Settings, get_settings

    get_settings.cache_clear()
    model, x = cm.iris()
    path = cm.write_pickle(model, tmp / "iris.pkl")
    settings = Settings(home=tmp / "home", api_port=free_port(), prefect_port=free_port(),
                        rate_limit_per_minute=10_000_000)
    platform = Platform(settings=settings)
    rows: list[tuple[str, str, str]] = []
    try:
        platform.start()
        api = httpx.Client(base_url=platform.api_url, timeout=120)
        token = ok(api.post("/api/v1/auth/register", json={"email": "bench@example.com", "username": "bench",
                                                            "password": "weft-bench-password"}), 201)["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        _, cold = deploy(api, headers, path, "bench-cold")
        warm_id, warm = deploy(api, headers, path, "bench-warm")
        rows += [("upload → active, environment built (cold)", f"{cold:.1f} s", ""),
                 ("upload → active, environment reused (warm)", f"{warm:.1f} s", f"{cold / warm:.2f}× faster")]
        ok(api.patch(f"/api/v1/deployments/{warm_id}", headers=headers,
                     json={"min_instances": 1, "max_instances": 1}))
        example = x[:1]

        def in_process():
            return lambda: model.predict(example) is not None

        def through_api():
            client = httpx.Client(base_url=platform.api_url, headers=headers, timeout=60)
            body = {"data": example[0].tolist()}
            return lambda: client.post(f"/api/v1/predict/{warm_id}", json=body).status_code == 200

        for clients in (1, 16):
            local = rate(in_process, clients, args.seconds)
            served = rate(through_api, clients, args.seconds)
            print(f"{clients} clients: in-process {local}, API {served}")
            rows += [(f"in-process model.predict, {clients} thread(s)", f"{local['per_second']:.0f}/s",
                      f"p50 {local['p50_ms']:.2f} ms"),
                     (f"POST /api/v1/predict, {clients} client(s)", f"{served['per_second']:.0f}/s",
                      f"p50 {served['p50_ms']:.1f} ms, p99 {served['p99_ms']:.1f} ms, "
                      f"{served['per_second'] / local['per_second']:.2f}× in-process, {served['errors']} errors")]
    finally:
        platform.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n| measurement | value | notes |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    main()
