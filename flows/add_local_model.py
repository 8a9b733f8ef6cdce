"""Onboard a model from Hugging Face, a URL or local disk (document 004: add local model)."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.models import estimate_hardware, extract_metadata, fetch_model, register_local_model, validate_source
from tasks.scanning import scan_model
from weft.specs.models import AddLocalModelSpec
from weft.specs.names import WorkflowName


@flow(name=WorkflowName.ADD_LOCAL_MODEL.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("name"), names.workflow()))
def add_local_model(spec: AddLocalModelSpec, workflow_id: str | None = None, cache_version: int = 0,
                    owner_id: str | None = None) -> str:
    """Validate source → fetch into registry storage → extract metadata → estimate hardware → register →
    security scan (the model is deployable only once its scan is SAFE)."""
    ref = workflow_ref(WorkflowName.ADD_LOCAL_MODEL, spec, workflow_id, owner_id)
    source = validate_source(spec, ref.owner_id)
    staged = fetch_model(source, ref.workflow_id)
    metadata = extract_metadata(staged)
    estimate = estimate_hardware(metadata)
    model_id = register_local_model(spec, staged, metadata, estimate, ref.workflow_id, ref.owner_id)
    scan_model(model_id)
    return model_id
