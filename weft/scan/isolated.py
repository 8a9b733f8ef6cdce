"""Run one file's check in a separate process with a time limit: a scanner that crashes or hangs is
a scan error on that file, never a silent pass. `python -m weft.scan.isolated KIND PATH SOURCE`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from weft.scan import checks
from weft.scan.checks import Issue
from weft.scan.classic import classic_issues

BASE_TIMEOUT = 60.0
SECONDS_PER_GB = 120.0
CHECKS = {**checks.CHECKS, "classic": classic_issues}  # classic.py imports checks.py, not the reverse


def scan_error(source: str, kind: str, why: str) -> Issue:
    return Issue(title="Scan error", severity="HIGH", source=source, scanner=f"weft.{kind}",
                 description=f"the {kind} check could not finish ({why}); the file is not verified")


def run_isolated(kind: str, path: Path, source: str, timeout: float | None = None) -> list[Issue]:
    """The issues of `path`, found by a child process; its failure is an issue too."""
    limit = timeout or BASE_TIMEOUT + SECONDS_PER_GB * path.stat().st_size / 1e9
    try:
        done = subprocess.run([sys.executable, "-m", "weft.scan.isolated", kind, str(path), source],
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return [scan_error(source, kind, f"timed out after {limit:.0f} s")]
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [scan_error(source, kind, f"exit {done.returncode}: {tail[:300]}")]
    try:
        return [Issue.model_validate(i) for i in json.loads(done.stdout.strip().splitlines()[-1])]
    except (ValueError, IndexError) as exc:
        return [scan_error(source, kind, f"unreadable result: {exc}")]


def main() -> None:
    kind, path, source = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    issues = CHECKS[kind](path, source)
    print(json.dumps([i.model_dump() for i in issues]))


if __name__ == "__main__":
    main()
