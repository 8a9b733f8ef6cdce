"""Scan a registered model's files for malicious or risky content (document 004: model security scan)."""

from __future__ import annotations

from prefect import flow

from flows.common import workflow_ref
from tasks.scanning import (check_gguf, detect_code, list_model_files, roll_up_scan, scan_pickles,
                            validate_safetensors)
from weft.scan.report import ScanResult
from weft.specs.scanning import ScanSpec


def scan_model(model_id: str) -> ScanResult:
    """The scan's steps, shared by this flow and the onboarding flow's last step."""
    files = list_model_files(model_id)
    findings = [scan_pickles(files), validate_safetensors(files), detect_code(files), check_gguf(files)]
    return roll_up_scan(files, findings)


@flow(name="model_security_scan", log_prints=True)
def model_security_scan(spec: ScanSpec, workflow_id: str | None = None, cache_version: int = 0,
                        owner_id: str | None = None) -> dict:
    """List files with sha256 → pickles → safetensors headers → shipped code → GGUF headers → roll up."""
    workflow_ref("model_security_scan", spec, workflow_id, owner_id)
    return scan_model(spec.model_id).model_dump()
