"""Document 002's view of a registry record: lineage (job), storage paths, files, metrics, download links."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from weft.registry.bundle import latest_evaluation
from weft.registry.layout import GGUF, MERGED, adapter_of, artifacts, export_key, storage_key
from weft.registry.links import download_links
from weft.specs.names import WorkflowName
from weft.storage import Storage
from weft.tables import Model, Workflow
from weft.workflows import merged_data, stored_steps


def summary(session: Session, storage: Storage, model: Model) -> dict[str, Any]:
    """The list item: paths as recorded (no storage round trip per item), job id and training metrics."""
    adapter = adapter_of(session, model)
    details, exports = model.details or {}, (model.details or {}).get("exports") or {}
    return {
        "ID": model.id, "job_id": job.id if (job := _job(session, model)) else None,
        "storage_path": storage_key(storage, model),
        "lora_adapters_path": details.get("lora_adapters_key") or (adapter.storage_key if adapter else None),
        "gguf_path": details.get("gguf_key") or (export_key(model.id, GGUF) if GGUF in exports else None),
        "merged_path": export_key(model.id, MERGED) if MERGED in exports else None,
        "training_metrics": dict(adapter.metrics if adapter else model.metrics),
        "total_size": adapter.size_bytes if adapter else (details.get("size_bytes") or 0),
    }


def _job(session: Session, model: Model) -> Workflow | None:
    """The fine-tune job that produced the model (its workflow is a fine_tune, not e.g. an onboarding)."""
    wf = session.get(Workflow, model.workflow_id) if model.workflow_id else None
    return wf if wf is not None and wf.workflow_type == WorkflowName.FINE_TUNE else None


def job_of(session: Session, model: Model) -> dict[str, Any] | None:
    """Document 002's `job`: `{id, dataset_id, status, configuration}`."""
    if (wf := _job(session, model)) is None:
        return None
    adapter = adapter_of(session, model)
    data = merged_data(stored_steps(session, wf.id))
    return {"id": wf.id, "ID": wf.id, "dataset_id": data.get("dataset_id") or (adapter.dataset_id if adapter else None),
            "status": wf.status.lower(), "configuration": data.get("config") or (adapter.config if adapter else {})}


def detail(session: Session, storage: Storage, model: Model, base_url: str) -> dict[str, Any]:
    """Everything of `summary` checked against storage, plus files, evaluation results and download links."""
    found = artifacts(session, storage, model)
    objects = found.files
    links, file_links = download_links(storage, base_url, found, model.user_id, objects)
    evaluation = latest_evaluation(session, model.id)
    return {
        **summary(session, storage, model),
        "storage_path": found.storage_path,
        "lora_adapters_path": found.lora_adapters_path, "gguf_path": found.gguf_path,
        "merged_path": found.merged_path,
        "job": job_of(session, model),
        "files": {name: size for name, (_, size) in objects.items()},
        "total_size": sum(size for _, size in objects.values()),
        "eval_results": (evaluation.results.get("fine_tuned") or {}) if evaluation else {},
        "download_links": links, "file_links": file_links,
    }
