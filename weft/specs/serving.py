"""Specs of the serving workflows: deploy_model (document 004's local and cloud step sequences),
add_worker, and the deploy gate checked before either starts."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from weft.errors import Refused
from weft.serving.plan import AutoScaling, DeployConfig, Engine, templates
from weft.specs.base import Stage, StepDef, StepModel, WorkflowType, register, step_context
from weft.specs.names import WorkflowName
from weft.statuses import SERVING

NAME_HELP = ("the endpoint's display name; naming one of your endpoints deploys a new revision onto it")
TRAFFIC_HELP = ("a new revision on an existing endpoint: its share of the traffic in percent (a canary; the "
                "other revisions keep the rest in proportion); unset: 100 once it is healthy")
ENGINE_HELP = ("serving engine of the replicas; unset: vLLM where their pool has a CUDA GPU and vLLM, else weft's "
               "transformers server. A requested engine that cannot run there fails the plan step")


def owned_model(value: str, info: ValidationInfo) -> str:
    ctx = step_context(info)
    if ctx.session is not None:
        from weft.tables import Model

        ctx.owned(Model, value, "model")
    return value


def known_template(value: str | None) -> str | None:
    if value is not None and value not in templates():
        raise ValueError(f"unknown template {value}; GET /api/v1/templates lists them")
    return value


class ChooseModel(StepModel):
    project_id: str | None = None
    model_id: str

    _owned = field_validator("model_id")(owned_model)


class DeployStep2(StepModel):
    """Cloud: the credential; local: the template."""

    credential_id: str | None = None
    template_id: str | None = None

    _template = field_validator("template_id")(known_template)


class DeployStep3(StepModel):
    """Cloud: the template; local: endpoint name and deploy_config."""

    template_id: str | None = None
    endpoint_name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[\w .:/-]+$",
                                      description=NAME_HELP)
    deploy_config: DeployConfig | None = None
    engine: Engine | None = Field(default=None, description=ENGINE_HELP)
    auto_scaling: AutoScaling | None = None
    traffic_percent: int | None = Field(default=None, ge=1, le=100, description=TRAFFIC_HELP)

    _template = field_validator("template_id")(known_template)


class DeployStep4(StepModel):
    """Cloud: endpoint name and deploy_config; local: nothing (its cluster comes at step 5)."""

    endpoint_name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[\w .:/-]+$",
                                      description=NAME_HELP)
    deploy_config: DeployConfig | None = None
    cluster_id: str | None = None


class ChooseCluster(StepModel):
    cluster_id: str | None = None


class DeploySpec(StepModel):
    """Everything the deploy_model flow needs (the merged steps)."""

    project_id: str | None = None
    model_id: str
    credential_id: str | None = None
    template_id: str | None = None
    endpoint_name: str = Field(min_length=1, max_length=100, pattern=r"^[\w .:/-]+$", description=NAME_HELP)
    deploy_config: DeployConfig = Field(default_factory=DeployConfig)
    engine: Engine | None = Field(default=None, description=ENGINE_HELP)
    auto_scaling: AutoScaling | None = None
    traffic_percent: int | None = Field(default=None, ge=1, le=100, description=TRAFFIC_HELP)
    cluster_id: str | None = None

    _owned = field_validator("model_id")(owned_model)

    @model_validator(mode="before")
    @classmethod
    def _template_defaults(cls, data: Any) -> Any:
        """A template's deploy_config fills what the posted deploy_config leaves out."""
        if isinstance(data, dict) and data.get("template_id") in templates():
            preset = templates()[data["template_id"]].deploy_config.model_dump(exclude_none=True)
            given = data.get("deploy_config") or {}
            given = given.model_dump(exclude_unset=True) if isinstance(given, DeployConfig) else given
            data = {**data, "deploy_config": {**preset, **given}}
        return data

    @field_validator("endpoint_name")
    @classmethod
    def _free_or_own_name(cls, value: str, info: ValidationInfo) -> str:
        """A new name, or one of the caller's replica endpoints (the deploy adds a revision to it)."""
        ctx = step_context(info)
        if ctx.session is not None:
            from weft.serving.revisions import endpoint_named

            endpoint = endpoint_named(ctx.session, value)
            if endpoint is not None and (endpoint.user_id != ctx.user_id or endpoint.kind != "replicas"):
                raise ValueError(f"an endpoint named {value!r} exists already"
                                 + (" (a cloud proxy: it takes no revisions)" if endpoint.user_id == ctx.user_id
                                    else ""))
        return value


def admit_deploy(session: Any, spec: dict[str, Any]) -> None:
    """The deploy gate: a model with files must have a SAFE scan or an override; a cloud model needs
    its credential."""
    from weft.scan.gate import NotDeployable, check_deployable
    from weft.tables import Credential, Model

    model = session.get(Model, spec["model_id"])
    if model.modality == "classic":
        raise Refused("CLASSIC_MODEL", "an uploaded classic model is deployed with POST /api/v1/deploy (or a new "
                      "version with POST /api/v1/deployments/{id}/versions), not as an LLM", {"model_id": model.id})
    if model.type == "cloud" or model.provider_type == "cloud_model":
        cred = session.get(Credential, spec.get("credential_id") or "")
        if cred is None or cred.user_id != model.user_id:
            raise Refused("CREDENTIAL_REQUIRED", "a cloud model's endpoint needs one of your credentials "
                          "(credential_id)", {"model_id": model.id})
        return
    try:
        check_deployable(model)
    except NotDeployable as exc:
        raise Refused("SCAN_NOT_SAFE", str(exc), {"model_id": model.id, "scan_status": (model.scan or {}).get("status")}) \
            from exc


DEPLOY = register(
    WorkflowType(
        name=WorkflowName.DEPLOY_MODEL,
        title="Deploy model",
        steps=(StepDef(1, "Select model", ChooseModel),
               StepDef(2, "Credential (cloud) or template (local)", DeployStep2),
               StepDef(3, "Template (cloud) or endpoint and deploy config (local)", DeployStep3),
               StepDef(4, "Endpoint and deploy config (cloud)", DeployStep4),
               StepDef(5, "Cluster (local)", ChooseCluster),
               StepDef(6, "Cluster (cloud)", ChooseCluster)),
        spec=DeploySpec,
        flow_name=WorkflowName.DEPLOY_MODEL,
        admit=admit_deploy,
        stages=(
            Stage("validate_deployment", "Check the deploy gate and create the endpoint"),
            Stage("plan_deployment", "Plan the revision's replicas from deploy_config and the model's memory"),
            Stage("wait_replicas", "Wait for the endpoint controller to run them healthy"),
            Stage("activate_endpoint", "Route traffic to the revision and activate the endpoint"),
        ),
    )
)


class ChooseEndpoint(StepModel):
    endpoint_id: str
    additional_concurrency: int = Field(ge=1, le=100_000)

    @field_validator("endpoint_id")
    @classmethod
    def _active(cls, value: str, info: ValidationInfo) -> str:
        ctx = step_context(info)
        if ctx.session is not None:
            from weft.tables import Endpoint

            endpoint = ctx.owned(Endpoint, value, "endpoint")
            if endpoint.kind != "replicas" or endpoint.status not in SERVING:
                raise ValueError(f"endpoint {value} is {endpoint.status} ({endpoint.kind}): only an active "
                                 "replica endpoint takes workers")
        return value


class Confirm(StepModel):
    """A step with nothing to fill in (document 004's add-worker screens 2 and 3)."""


class AddWorkerSpec(ChooseEndpoint):
    """Everything the add_worker flow needs."""


ADD_WORKER = register(
    WorkflowType(
        name=WorkflowName.ADD_WORKER,
        title="Add worker to endpoint",
        steps=(StepDef(1, "Endpoint and additional concurrency", ChooseEndpoint),
               StepDef(2, "Review", Confirm), StepDef(3, "Confirm", Confirm)),
        spec=AddWorkerSpec,
        flow_name=WorkflowName.ADD_WORKER,
        stages=(
            Stage("plan_workers", "Raise the endpoint's replica count by the extra concurrency"),
            Stage("wait_replicas", "Wait for the endpoint controller to run them healthy"),
        ),
    )
)
