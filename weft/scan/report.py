"""The scan result as the reference product stores it, and its markdown rendering."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel

from weft.scan.checks import SAFE, SEVERITIES, Issue, safetensors_issues

HASH_CHUNK = 8 * 1024 * 1024


class ScanResult(BaseModel):
    status: str  # SAFE | LOW | MEDIUM | HIGH | CRITICAL
    total_issues: int
    total_scanned: int
    total_issues_by_severity: dict[str, int]
    scanned_files: list[str]
    total_skipped_files: int
    model_issues: list[Issue]
    file_hashes: dict[str, str] = {}


def roll_up(issues: list[Issue], scanned: list[str], skipped: int, hashes: dict[str, str]) -> ScanResult:
    by_severity = {s: sum(i.severity == s for i in issues) for s in SEVERITIES}
    worst = max((SEVERITIES.index(i.severity) for i in issues), default=None)
    ordered = sorted(issues, key=lambda i: (-SEVERITIES.index(i.severity), i.source, i.title))
    return ScanResult(status=SAFE if worst is None else SEVERITIES[worst], total_issues=len(issues),
                      total_scanned=len(scanned), total_issues_by_severity=by_severity, scanned_files=scanned,
                      total_skipped_files=skipped, model_issues=ordered, file_hashes=hashes)


def adapter_scan(weights: Path, name: str, sha256: str) -> ScanResult:
    """The scan of a LoRA adapter's weights file (the safetensors header checks; nothing else in an adapter
    is loaded as code): what an uploaded or a trained adapter is registered with."""
    return roll_up(safetensors_issues(weights, name), [name], 0, {name: sha256})


def markdown(name: str, result: ScanResult) -> str:
    lines = [f"# Security scan: {name}", "", f"**Status: {result.status}** — {result.total_issues} issues in "
             f"{result.total_scanned} scanned files ({result.total_skipped_files} skipped)", "",
             "| severity | count |", "| --- | --- |"]
    lines += [f"| {s} | {n} |" for s, n in result.total_issues_by_severity.items()]
    if result.model_issues:
        lines += ["", "| severity | file | finding | scanner |", "| --- | --- | --- | --- |"]
        lines += [f"| {i.severity} | `{i.source}` | {i.title}: {i.description} | {i.scanner} |"
                  for i in result.model_issues]
    return "\n".join(lines)


def sha256_of(path: Path) -> str:
    """The file's sha256, read in chunks (the scan's cache keys and file hashes)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()
