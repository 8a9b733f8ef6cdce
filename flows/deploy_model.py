"""Deploy a model: an endpoint of replicas (serve_replica runs) behind the gateway, or a cloud proxy."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.serving import activate_endpoint, plan_deployment, start_replicas, validate_deployment, wait_healthy
from weft.specs.names import WorkflowName
from weft.specs.serving import DeploySpec
from weft.tables import Model


@flow(name=WorkflowName.DEPLOY_MODEL.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("endpoint_name"), names.spec("model_id", Model), names.workflow()))
def deploy_model(spec: DeploySpec, workflow_id: str | None = None, cache_version: int = 0,
                 owner_id: str | None = None) -> str:
    """Deploy gate → plan replicas → start them → wait until healthy → endpoint active. Returns its id."""
    ref = workflow_ref(WorkflowName.DEPLOY_MODEL, spec, workflow_id, owner_id)
    endpoint = validate_deployment(spec, ref.workflow_id, ref.owner_id)
    if not endpoint.proxy:
        plan = plan_deployment(endpoint.endpoint_id, spec)
        replicas = start_replicas(endpoint.endpoint_id, plan.replicas, ref.workflow_id)
        wait_healthy(replicas)
    return activate_endpoint(endpoint.endpoint_id)
