"""CLI: python -m weft.serving.server --model DIR --name NAME [--host H] [--port P] [--adapter NAME=DIR ...]
[--max-batch N]."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from weft.serving.server.app import create_app
from weft.serving.server.types import DEFAULT_MAX_BATCH

log = logging.getLogger("weft.serving.server")


def _parse_adapter(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected name=DIR, got {value!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, load the model and serve it with uvicorn until stopped."""
    parser = argparse.ArgumentParser(prog="python -m weft.serving.server",
                                     description="weft's OpenAI-compatible transformers server")
    parser.add_argument("--model", required=True, type=Path, help="model folder (config, weights, tokenizer)")
    parser.add_argument("--name", required=True, help="served model name (the `model` field of requests)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--adapter", action="append", type=_parse_adapter, default=[], metavar="NAME=DIR",
                        help="a PEFT/LoRA adapter served as NAME (repeatable)")
    parser.add_argument("--default-adapter", default=None, help="adapter used when a request names --name")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="sequences decoded together, the replica's concurrency (1: one at a time)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.model, args.name, dict(args.adapter) or None, default_adapter=args.default_adapter,
                     device=args.device, max_batch=args.max_batch)
    log.info("serving %s (%s) on http://%s:%d", args.name, args.model, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
