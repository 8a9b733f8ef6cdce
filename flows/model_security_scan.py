"""Scan a registered model's files for malicious or risky content (document 004: model security scan)."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.scanning import scan_model
from weft.specs.names import WorkflowName
from weft.specs.scanning import ScanSpec
from weft.tables import Model


@flow(name=WorkflowName.MODEL_SECURITY_SCAN.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("model_id", Model), names.workflow()))
def model_security_scan(spec: ScanSpec, workflow_id: str | None = None, cache_version: int = 0,
                        owner_id: str | None = None) -> dict:
    """List files with sha256 → pickles → safetensors headers → shipped code → GGUF headers → roll up."""
    workflow_ref(WorkflowName.MODEL_SECURITY_SCAN, spec, workflow_id, owner_id)
    return scan_model(spec.model_id).model_dump()
