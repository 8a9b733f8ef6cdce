"""Add workers (replicas) to an active endpoint for more concurrent requests."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.serving import plan_workers, wait_replicas
from weft.specs.names import WorkflowName
from weft.specs.serving import AddWorkerSpec
from weft.tables import Endpoint


@flow(name=WorkflowName.ADD_WORKER.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("endpoint_id", Endpoint), names.workflow()))
def add_worker(spec: AddWorkerSpec, workflow_id: str | None = None, cache_version: int = 0,
               owner_id: str | None = None) -> list[str]:
    """Raise the replica count → wait for the controller to run them healthy. Returns the replica ids."""
    workflow_ref(WorkflowName.ADD_WORKER, spec, workflow_id, owner_id)
    revision_id = plan_workers(spec.endpoint_id, spec.additional_concurrency)
    return list(wait_replicas(revision_id))
