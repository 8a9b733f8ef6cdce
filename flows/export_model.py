"""Export a model for use outside weft: merged safetensors, or a GGUF for llama.cpp / Ollama, verified by
reloading it."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.export import convert_gguf, merge_weights, record_export, resolve_export, verify_gguf
from weft.specs.export import ExportSpec
from weft.specs.names import WorkflowName
from weft.tables import Model


@flow(name=WorkflowName.EXPORT_MODEL.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("model_id", Model), names.workflow()))
def export_model(spec: ExportSpec, workflow_id: str | None = None, cache_version: int = 0,
                 owner_id: str | None = None) -> dict[str, Any]:
    """Resolve → merge (adapter effect checked) → GGUF → reload and compare → record on the model."""
    workflow_ref(WorkflowName.EXPORT_MODEL, spec, workflow_id, owner_id)
    inputs = resolve_export(spec)
    merged = merge_weights(inputs)
    if spec.format == "merged":
        return record_export(inputs, spec.format, merged, None, None)
    gguf = convert_gguf(inputs, merged, spec.quantization)
    verification = verify_gguf(inputs, merged, gguf)
    return record_export(inputs, spec.format, merged, gguf, verification)
