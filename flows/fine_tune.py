"""Fine-tune a registered model on a registered dataset with LoRA, DoRA or QLoRA."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.training import (
    preflight,
    prepare_dataset,
    register_adapter,
    resolve_inputs,
    start_export,
    train_adapter,
)
from weft.specs.names import WorkflowName
from weft.specs.training import FineTuneSpec
from weft.tables import Model


@flow(name=WorkflowName.FINE_TUNE.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("base_model", Model), names.workflow("job")))
def fine_tune(spec: FineTuneSpec, workflow_id: str | None = None, cache_version: int = 0,
              owner_id: str | None = None) -> str:
    """Resolve → prepare records → pre-flight estimate → train (resumable) → register adapter and model →
    start its export workflow (when the config asks)."""
    ref = workflow_ref(WorkflowName.FINE_TUNE, spec, workflow_id, owner_id)
    inputs = resolve_inputs(spec)
    prepared = prepare_dataset(inputs, ref.workflow_id)
    estimate = preflight(inputs, prepared, spec)
    trained = train_adapter(inputs, prepared, estimate, spec, ref.workflow_id, ref.owner_id)
    model_id = register_adapter(inputs, trained, spec, ref.workflow_id, ref.owner_id)
    if spec.export is not None:
        start_export(model_id, spec.export, ref.owner_id)
    return model_id
