"""Spec of the classic-model deploy workflow (document 001's `POST /api/v1/deploy`): the API stores the
upload and its rows, then starts it with one step."""

from __future__ import annotations

from pydantic import Field

from weft.specs.base import Stage, StepDef, StepModel, WorkflowType, register
from weft.specs.names import WorkflowName

CLASSIC_STAGES = (
    Stage("receive_upload", "Check the stored upload (size, sha256)"),
    Stage("scan_upload", "Scan the file before anything loads it"),
    Stage("build_environment", "Build the uv environment of its requirements"),
    Stage("inspect_model", "Load it in a sandbox: framework, type, shapes"),
    Stage("add_classic_revision", "Add the revision the controller runs"),
    Stage("wait_replicas", "Wait for healthy replicas"),
    Stage("activate_endpoint", "Route it traffic"),
)


class ClassicDeploySpec(StepModel):
    model_id: str = Field(description="the uploaded model's registry row")
    endpoint_id: str = Field(description="the deployment it becomes a version of")
    memory_mb: int = Field(default=1024, ge=256, le=262_144, description="hard memory limit of each replica")
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600, description="longest one prediction may run")
    changes: str | None = Field(default=None, max_length=1000, description="what this version changes")


DEPLOY_CLASSIC_MODEL = register(
    WorkflowType(
        name=WorkflowName.DEPLOY_CLASSIC_MODEL,
        title="Deploy an uploaded model",
        steps=(StepDef(1, "Upload", ClassicDeploySpec),),
        spec=ClassicDeploySpec,
        flow_name=WorkflowName.DEPLOY_CLASSIC_MODEL,
        stages=CLASSIC_STAGES,
    )
)
