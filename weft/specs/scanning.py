"""Spec of the model security-scan workflow (document 004: one step with trigger_workflow)."""

from __future__ import annotations

from weft.specs.base import Stage, StepDef, StepModel, StoredModelId, WorkflowType, register
from weft.specs.names import WorkflowName

SCAN_STAGES = (
    Stage("list_model_files", "List files with sha256"),
    Stage("scan_pickles", "Scan pickles (modelscan + picklescan)"),
    Stage("validate_safetensors", "Validate safetensors headers"),
    Stage("detect_code", "Flag shipped code / trust_remote_code"),
    Stage("check_gguf", "Check GGUF headers"),
    Stage("roll_up_scan", "Roll up and record"),
)


class ScanSpec(StepModel):
    model_id: StoredModelId


MODEL_SECURITY_SCAN = register(
    WorkflowType(
        name=WorkflowName.MODEL_SECURITY_SCAN,
        title="Model security scan",
        steps=(StepDef(1, "Select model", ScanSpec),),
        spec=ScanSpec,
        flow_name=WorkflowName.MODEL_SECURITY_SCAN,
        stages=SCAN_STAGES,
    )
)
