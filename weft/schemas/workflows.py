"""The step-numbered workflow API (document 004): the request body of each workflow type's step route
and the views the workflow routes return.

A step route's body is, in OpenAPI, a union discriminated on `step_number` of that type's steps: each
member is the step's own model from `weft.specs` merged with the envelope (`workflow_id`,
`workflow_total_steps`, `step_number` as a constant, `trigger_workflow`), so a client generator builds
valid requests. The union only documents the body: the route hands the JSON object to
`weft.workflows.post_step`, which validates the envelope and then the step with a `StepContext`
(the caller, the earlier steps, the database session) exactly as the step API always has, so its
errors (`add_local_model has no step 7`, `step 3 (Add model details) is invalid`, per-field details)
stay the same. Validating with the union itself would report every member's mismatch instead, and
without the context the validators that look up the caller's rows could not run.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, create_model
from pydantic_core import core_schema

from weft.schemas.common import UtcDatetime
from weft.specs import StepDef, StepModel, WorkflowType, get_type
from weft.specs.names import WorkflowName

# each step route (under /api/v1): its path and the workflow type whose steps it takes (the API's routes
# and the client's `workflows.step`)
STEP_ROUTES = (("/models/local-model-workflow", WorkflowName.ADD_LOCAL_MODEL),
               ("/models/cloud-model-workflow", WorkflowName.ADD_CLOUD_MODEL),
               ("/models/security-scan", WorkflowName.MODEL_SECURITY_SCAN),
               ("/models/finetune-workflow", WorkflowName.FINE_TUNE),
               ("/models/evaluate-workflow", WorkflowName.EVALUATE_MODEL),
               ("/models/export-workflow", WorkflowName.EXPORT_MODEL),
               ("/models/deploy-workflow", WorkflowName.DEPLOY_MODEL),
               ("/endpoints/add-worker", WorkflowName.ADD_WORKER),
               ("/datasets/analyze-workflow", WorkflowName.ANALYZE_DATASET))


class StageView(BaseModel):
    id: str
    title: str
    status: str


class RunView(BaseModel):
    status: str
    reason: str | None = None
    stages: list[StageView] = []


class StepEnvelope(BaseModel):
    """The fields every step post carries besides its own."""

    workflow_id: str | None = Field(default=None, description="the workflow to continue; absent: start a new one")
    workflow_total_steps: int | None = Field(default=None, ge=1, le=50,
                                             description="required when starting a new workflow")
    step_number: int = Field(ge=1)
    trigger_workflow: bool = Field(default=False, description="validate the merged spec and start the flow run")


class WorkflowOutput(BaseModel):
    """What a finished workflow produced (document 000's `output`)."""

    model_id: str | None = Field(default=None, description="the model it registered (a fine-tuned one for fine_tune)")
    adapter_id: str | None = None
    checkpoint_path: str | None = Field(default=None, description="the adapter's key in object storage")


class WorkflowView(BaseModel):
    """The merged view of document 004's step API, with document 000's fields of the same workflow (`id`,
    `name`, `description`, `config`: the merged spec, `completed_at`, `metrics`, `output`)."""

    workflow_id: str
    id: str
    name: str | None = None
    description: str | None = None
    workflow_type: str
    status: str
    current_step: int
    total_steps: int
    next_step: int | None
    steps: list[StageView]
    data: dict[str, Any]
    config: dict[str, Any]
    flow_run_id: str | None
    reason: str | None
    metrics: dict[str, Any] = {}
    output: WorkflowOutput | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class WorkflowSummary(BaseModel):
    """One workflow of a list."""

    id: str
    workflow_type: str
    name: str | None
    status: str
    current_step: int
    total_steps: int
    flow_run_id: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class WorkflowOut(WorkflowView):
    """A workflow as document 004's step API returns it: the merged data of its steps, and its run's
    status, reason and per-stage progress (`steps[]`)."""

    created_at: UtcDatetime
    updated_at: UtcDatetime
    completed_at: UtcDatetime | None = None


class WorkflowSummaryOut(WorkflowSummary):
    """One workflow of `GET /workflows`."""

    created_at: UtcDatetime
    updated_at: UtcDatetime


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def step_request_model(wt: WorkflowType, step: StepDef) -> type[StepModel]:
    """Step `step` of `wt` as one request body: the step's fields and the envelope's."""
    envelope = StepEnvelope.model_fields
    first = step.number == wt.steps[0].number
    return create_model(
        f"{camel(wt.name)}Step{step.number}",
        __base__=step.model,
        __doc__=f"{wt.title}, step {step.number}: {step.title}.",
        workflow_id=(str | None, Field(default=None, description=(
            "the workflow to change; absent: start a new one" if first else "the workflow this step belongs to"))),
        workflow_total_steps=(int | None, Field(default=None, ge=1, le=50, description=(
            "required when workflow_id is absent (a new workflow)" if first else "only when starting a workflow"))),
        step_number=(Literal[step.number], Field(description=envelope["step_number"].description)),  # type: ignore[valid-type]
        trigger_workflow=(bool, Field(default=False, description=envelope["trigger_workflow"].description)),
    )


def documented_as(annotation: Any, name: str, doc: str, step: int | None = None) -> type:
    """A body type that accepts any JSON value but is described in OpenAPI as `annotation` (a one-member
    union on `step_number` when `step` is given: `annotation` is that step's model)."""
    schema = TypeAdapter(annotation).core_schema  # self-contained: it carries its own definitions
    if "ref" in schema:  # a model: described by reference (a component), as FastAPI does for a model body
        schema = core_schema.definitions_schema(core_schema.definition_reference_schema(schema["ref"]), [schema])

    def json_schema(_schema: Any, handler: Any) -> dict[str, Any]:
        described = handler(schema)
        if step is not None and "$ref" in described:
            ref = described["$ref"]
            return {"oneOf": [{"$ref": ref}],
                    "discriminator": {"propertyName": "step_number", "mapping": {str(step): ref}}}
        return described

    def core(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.any_schema(metadata={"pydantic_js_annotation_functions": [json_schema]})

    return type(name, (), {"__doc__": doc, "__get_pydantic_core_schema__": classmethod(core)})


@cache
def step_members(type_name: str) -> tuple[type[StepModel], ...]:
    """The request model of each step of `type_name`, in step order."""
    wt = get_type(type_name)
    return tuple(step_request_model(wt, step) for step in wt.steps)


@cache
def step_request(type_name: str) -> type:
    """The body of `type_name`'s step route: documented as the union of its steps on `step_number`."""
    wt = get_type(type_name)
    members = step_members(type_name)
    name, doc = f"{camel(type_name)}StepRequest", f"One step of {wt.title}: " + ", ".join(
        f"{s.number} {s.title}" for s in wt.steps) + "."
    if len(members) == 1:  # a union of one: pydantic has no discriminator for it, so it is described as one
        return documented_as(members[0], name, doc, step=wt.steps[0].number)
    return documented_as(Annotated[Union[members], Field(discriminator="step_number")], name, doc)  # noqa: UP007
