"""Add a cluster: a Prefect work pool weft can deploy replicas onto."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.clusters import create_work_pool, register_cluster, register_replica_deployment
from weft.specs.clusters import AddClusterSpec
from weft.specs.names import WorkflowName


@flow(name=WorkflowName.ADD_CLUSTER.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("name"), names.spec("pool_name"), names.workflow()))
def add_cluster(spec: AddClusterSpec, workflow_id: str | None = None, cache_version: int = 0,
                owner_id: str | None = None) -> str:
    """Work pool → serve_replica deployment on it → cluster record. Returns the cluster id."""
    ref = workflow_ref(WorkflowName.ADD_CLUSTER, spec, workflow_id, owner_id)
    pool = create_work_pool(spec)
    register_replica_deployment(pool)
    return register_cluster(spec, ref.owner_id)
