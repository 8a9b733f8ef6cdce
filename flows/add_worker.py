"""Add workers (replicas) to an active endpoint for more concurrent requests."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.serving import plan_workers, start_replicas, wait_healthy
from weft.specs.names import WorkflowName
from weft.specs.serving import AddWorkerSpec
from weft.tables import Endpoint


@flow(name=WorkflowName.ADD_WORKER.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("endpoint_id", Endpoint), names.workflow()))
def add_worker(spec: AddWorkerSpec, workflow_id: str | None = None, cache_version: int = 0,
               owner_id: str | None = None) -> list[str]:
    """Plan the extra replicas → start them → wait until healthy. Returns the new replica ids."""
    ref = workflow_ref(WorkflowName.ADD_WORKER, spec, workflow_id, owner_id)
    count = plan_workers(spec.endpoint_id, spec.additional_concurrency)
    replicas = start_replicas(spec.endpoint_id, count, ref.workflow_id)
    wait_healthy(replicas)
    return replicas
