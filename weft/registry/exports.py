"""Starting an export of a model (`POST /models/{id}/export`): checked here so that what cannot work is a 422
at once, not a failed run."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from weft import workflows
from weft.errors import Invalid
from weft.export.formats import DEGRADED, QUANTIZE_TOOL, unavailable
from weft.registry.layout import adapter_of
from weft.specs.export import ExportOptions
from weft.specs.names import WorkflowName
from weft.tables import Model


def check(model: Model, has_adapter: bool, options: ExportOptions) -> str | None:
    """Refuse what cannot be exported (`Invalid`, 422); the warning to show for a degrading quantization."""
    if not model.storage_uri:
        raise Invalid(f"model {model.id} has no files in storage (a cloud model): there is nothing to export",
                      [{"field": "model_id", "message": "no files"}])
    if (model.details or {}).get("format") == "gguf" and not has_adapter:
        raise Invalid(f"model {model.id} is already a GGUF file", [{"field": "format", "message": "already gguf"}])
    if options.format == "gguf" and (why := unavailable(options.quantization)):
        raise Invalid(why, [{"field": "quantization", "message": f"needs {QUANTIZE_TOOL}"}])
    return DEGRADED.get(options.quantization) if options.format == "gguf" else None


def start(session: Session, user_id: str, model: Model, options: ExportOptions) -> dict[str, Any]:
    """Create and trigger the export_model workflow; returns the 202 body."""
    warning = check(model, adapter_of(session, model) is not None, options)
    spec = {"model_id": model.id, **options.model_dump()}
    wf = workflows.create(session, user_id, WorkflowName.EXPORT_MODEL, [spec], trigger=True)
    return {"workflow_id": wf.id, "status": wf.status.lower(), "model_id": model.id, "format": options.format,
            "quantization": options.quantization if options.format == "gguf" else None, "warning": warning,
            "flow_run_id": wf.flow_run_id,
            "message": f"exporting {model.name} as {options.format}"
                       + (f" ({options.quantization})" if options.format == "gguf" else "")}
