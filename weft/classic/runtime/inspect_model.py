"""Inspect an uploaded classic model inside its own environment: load it, describe it and run one probe
prediction on zeros of its input shape.

    python inspect_model.py --model PATH --framework {sklearn,pytorch,keras} [--unsafe-keras]

Prints exactly one JSON line on stdout: `{"ok": true, **describe()}` (exit 0), or
`{"ok": false, "error": "<Type>: <message>", "reason": "<code>"}` (exit 1) where the code is one of
lambda_layer, unsafe_code, not_torchscript, not_a_model, unknown_input_shape, unsupported_framework,
missing_package, memory, load_failed, probe_failed. Whatever the model or its libraries print goes to stderr.
Standard library, numpy and the framework only: this must not import weft.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, TextIO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loader  # noqa: E402  (the sibling module, found through the path set just above)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Load, describe and probe a classic model; print one JSON line.")
    parser.add_argument("--model", required=True, help="the model file")
    parser.add_argument("--framework", required=True, help="sklearn, pytorch or keras")
    parser.add_argument("--unsafe-keras", action="store_true", help="let Keras load Lambda layers (Python code)")
    return parser.parse_args(argv)


def failure(exc: BaseException, default_reason: str) -> dict[str, Any]:
    """The `ok: false` answer for an exception, with the most specific reason code it allows."""
    if isinstance(exc, loader.LoadError):
        reason = exc.reason
    elif loader.is_out_of_memory(exc):
        reason = "memory"
    elif isinstance(exc, ImportError):
        reason = "missing_package"
    else:
        reason = default_reason
    if isinstance(exc, loader.LoadError):  # an expected refusal: its message says it all
        print(loader.error_text(exc), file=sys.stderr)
    else:
        traceback.print_exception(exc, file=sys.stderr)
    return {"ok": False, "error": loader.error_text(exc), "reason": reason}


def inspect(path: str, framework: str, unsafe_keras: bool) -> dict[str, Any]:
    """`{"ok": true, **describe()}` once the model loads and answers a zero example, else the failure."""
    try:
        served = loader.load(path, framework, unsafe_keras=unsafe_keras)
    except Exception as exc:
        return failure(exc, "load_failed")
    try:
        info = served.describe()
        json.dumps(served.predict([loader.zeros(info["input_shape"])]))  # JSON-serialisable, too
    except Exception as exc:
        return failure(exc, "probe_failed")
    return {"ok": True, **info}


def claim_stdout() -> TextIO:
    """The real stdout, for the answer alone: file descriptor 1 then points at stderr, so what the model's
    libraries print (also from C) cannot get in the way of the JSON line."""
    sys.stdout.flush()
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return answer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    answer = claim_stdout()
    result = inspect(args.model, args.framework, args.unsafe_keras)
    answer.write(json.dumps(result) + "\n")
    answer.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
