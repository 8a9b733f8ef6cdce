"""Deploy an uploaded classic model (document 001's `POST /api/v1/deploy`): a new deployment, or a new
version of one, served by replicas of the classic-model server inside the model's own uv environment."""

from __future__ import annotations

from prefect import flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.flows import Flow

from flows import names
from flows.common import workflow_ref
from tasks.classic import (
    add_classic_revision,
    build_environment,
    deploy_failed,
    inspect_model,
    receive_upload,
    scan_upload,
    start_classic_replicas,
)
from tasks.serving import activate_endpoint, wait_replicas
from weft.specs.classic import ClassicDeploySpec
from weft.specs.names import WorkflowName
from weft.tables import Endpoint


def failed(flow: Flow, run: FlowRun, state: State) -> None:
    """The revision (and the endpoint, unless another version serves) fails with the run's reason."""
    spec = ClassicDeploySpec.model_validate(run.parameters["spec"])
    deploy_failed(spec.endpoint_id, run.parameters.get("workflow_id") or str(run.id), state.message or state.name)


@flow(name=WorkflowName.DEPLOY_CLASSIC_MODEL.value, log_prints=True, on_failure=[failed], on_crashed=[failed],
      flow_run_name=names.run_name(names.spec("endpoint_id", Endpoint), names.workflow()))
def deploy_classic_model(spec: ClassicDeploySpec, workflow_id: str | None = None, cache_version: int = 0,
                         owner_id: str | None = None) -> str:
    """Upload → revision → scan → environment → sandboxed inspection → replicas → traffic."""
    ref = workflow_ref(WorkflowName.DEPLOY_CLASSIC_MODEL, spec, workflow_id, owner_id)
    upload = receive_upload(spec)
    revision_id = add_classic_revision(spec, ref.workflow_id)
    scan_upload(upload)
    env_key = build_environment(upload)
    inspect_model(upload, env_key)
    start_classic_replicas(spec.endpoint_id, revision_id)
    wait_replicas(revision_id)
    return activate_endpoint(spec.endpoint_id, revision_id)
