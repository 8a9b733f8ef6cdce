"""Deploy a model: a new endpoint, or a new revision of one, whose replicas the endpoint controller runs
behind the gateway; or a cloud proxy."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.serving import activate_endpoint, plan_deployment, validate_deployment, wait_replicas
from weft.specs.names import WorkflowName
from weft.specs.serving import DeploySpec
from weft.tables import Model


@flow(name=WorkflowName.DEPLOY_MODEL.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("endpoint_name"), names.spec("model_id", Model), names.workflow()))
def deploy_model(spec: DeploySpec, workflow_id: str | None = None, cache_version: int = 0,
                 owner_id: str | None = None) -> str:
    """Deploy gate and revision → plan its replicas → wait for the controller to run them → route it
    traffic, endpoint active. Returns the endpoint's id."""
    ref = workflow_ref(WorkflowName.DEPLOY_MODEL, spec, workflow_id, owner_id)
    endpoint = validate_deployment(spec, ref.workflow_id, ref.owner_id)
    if not endpoint.proxy:
        plan_deployment(endpoint.endpoint_id, endpoint.revision_id, spec)
        wait_replicas(endpoint.revision_id)
    return activate_endpoint(endpoint.endpoint_id, endpoint.revision_id, spec.traffic_percent)
