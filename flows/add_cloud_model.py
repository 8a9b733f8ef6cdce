"""Register a cloud provider's model (document 004: add cloud model); nothing is downloaded."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.models import register_cloud_model, resolve_cloud_model
from weft.specs.models import AddCloudModelSpec
from weft.specs.names import WorkflowName


@flow(name=WorkflowName.ADD_CLOUD_MODEL.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("name"), names.workflow()))
def add_cloud_model(spec: AddCloudModelSpec, workflow_id: str | None = None, cache_version: int = 0,
                    owner_id: str | None = None) -> str:
    """Resolve the catalog entry or manual uri → register."""
    ref = workflow_ref(WorkflowName.ADD_CLOUD_MODEL, spec, workflow_id, owner_id)
    target = resolve_cloud_model(spec)
    return register_cloud_model(spec, target, ref.workflow_id, ref.owner_id)
