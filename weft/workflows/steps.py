"""Writing workflows: one step of document 004's step API (`post_step`), or a whole workflow at once
(`create`: every step validated, then stored in one transaction, then started when asked)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, delete

from weft import jobs
from weft.clock import utcnow
from weft.errors import Conflict, Invalid, NotFound, Unavailable
from weft.schemas.workflows import StepEnvelope, WorkflowView
from weft.specs import REGISTRY, StepContext, StepDef, WorkflowType, get_type
from weft.specs.names import WorkflowName
from weft.statuses import TERMINAL
from weft.tables import Workflow, WorkflowStep
from weft.workflows.lifecycle import start
from weft.workflows.views import merged_data, owned, stored_steps, view

ALIASES = {"fine-tuning": WorkflowName.FINE_TUNE}  # document 000's names → weft's workflow types


def put_step(session: Session, wf: Workflow, number: int, data: dict[str, Any]) -> None:
    """Store step `number`, replacing it and clearing every later step."""
    session.exec(delete(WorkflowStep).where(col(WorkflowStep.workflow_id) == wf.id,
                                            col(WorkflowStep.step_number) >= number))
    session.add(WorkflowStep(workflow_id=wf.id, step_number=number, data=data))
    wf.current_step = number
    wf.updated_at = utcnow()
    session.add(wf)


def discard(session: Session, workflow_id: str) -> None:
    """Remove a workflow that was never triggered, with its steps (a create whose start failed)."""
    session.rollback()
    session.exec(delete(WorkflowStep).where(col(WorkflowStep.workflow_id) == workflow_id))
    session.exec(delete(Workflow).where(col(Workflow.id) == workflow_id, col(Workflow.flow_run_id).is_(None)))
    session.commit()


def step_of(wt: WorkflowType, number: int) -> StepDef:
    step = wt.step(number)
    if step is None:
        numbers = [s.number for s in wt.steps]
        raise Invalid(f"{wt.name} has no step {number}",
                      [{"field": "step_number", "message": f"expected one of {numbers}"}])
    return step


def validate_step(step: StepDef, fields: dict[str, Any], context: StepContext) -> dict[str, Any]:
    """One step's fields, validated with the caller's context (validators look up the caller's rows)."""
    try:
        return step.model.model_validate(fields, context=context).model_dump(mode="json")
    except ValidationError as exc:
        raise Invalid.of(exc, f"step {step.number} ({step.title}) is invalid") from exc


def validate_spec(wt: WorkflowType, data: dict[str, Any], context: StepContext) -> dict[str, Any]:
    """The merged spec the flow runs with."""
    try:
        return wt.spec.model_validate(data, context=context).model_dump(mode="json")
    except ValidationError as exc:
        raise Invalid.of(exc, f"the {wt.name} workflow is incomplete and cannot be triggered") from exc


def _commit(session: Session) -> None:
    try:
        session.commit()
    except OperationalError as exc:
        session.rollback()
        raise Unavailable("the database is busy; try again") from exc


def post_step(session: Session, user_id: str, type_name: str, body: Any) -> WorkflowView:
    """Document 004: validate and store one step of a `type_name` workflow (`body` is the envelope and
    the step's fields); trigger the flow run when asked. Re-posting an earlier step replaces it and
    clears the later ones; a repeated trigger returns the same run."""
    wt = get_type(type_name)
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object")
    envelope_keys = set(StepEnvelope.model_fields)
    try:
        envelope = StepEnvelope.model_validate({k: v for k, v in body.items() if k in envelope_keys})
    except ValidationError as exc:
        raise Invalid.of(exc, "invalid workflow step") from exc
    fields = {k: v for k, v in body.items() if k not in envelope_keys}

    if envelope.workflow_id:
        wf = owned(session, user_id, envelope.workflow_id)
        if wf.workflow_type != wt.name:
            raise NotFound.of(f"{wt.name} workflow", envelope.workflow_id)
        if wf.flow_run_id and wf.status not in TERMINAL and envelope.trigger_workflow:
            return view(session, wf)  # a repeated trigger: same run, nothing changes
        if wf.flow_run_id or wf.status in TERMINAL:
            raise Conflict(f"workflow {wf.id} was already started (status {wf.status}); steps can no longer change",
                           {"workflow_id": wf.id, "status": wf.status})
    else:
        if envelope.workflow_total_steps is None:
            raise Invalid("workflow_total_steps is required to start a workflow",
                          [{"field": "workflow_total_steps", "message": "Field required"}])
        if envelope.step_number != wt.steps[0].number:
            raise Invalid(f"a new workflow starts at step {wt.steps[0].number}",
                          [{"field": "step_number", "message": "send workflow_id for later steps"}])
        wf = Workflow(user_id=user_id, workflow_type=wt.name, total_steps=envelope.workflow_total_steps)

    step = step_of(wt, envelope.step_number)
    previous = merged_data(stored_steps(session, wf.id), before=step.number) if envelope.workflow_id else {}
    context = StepContext(user_id=user_id, previous=previous, session=session)
    data = validate_step(step, fields, context)
    spec = validate_spec(wt, {**previous, **data}, context) if envelope.trigger_workflow else None

    session.add(wf)
    put_step(session, wf, step.number, data)
    _commit(session)
    session.refresh(wf)
    if spec is not None and not wf.flow_run_id:
        start(session, wt, wf, spec)
    return view(session, wf)


def create(session: Session, user_id: str, type_name: str,
           steps: Sequence[dict[str, Any]] | Mapping[int, dict[str, Any]], *, trigger: bool = False,
           total_steps: int | None = None, name: str | None = None, description: str | None = None) -> Workflow:
    """A whole `type_name` workflow at once: `steps` are the step bodies (the type's steps in order, or
    {step number: fields}). Every step is validated as `post_step` would (each seeing the ones before),
    then all are stored in one transaction; with `trigger` the merged spec is validated first and the
    flow run started after. Atomic: when anything fails (`Invalid`, `Refused`, `Unavailable`) nothing
    is left stored."""
    wt = get_type(type_name)
    numbered = (list(steps.items()) if isinstance(steps, Mapping)
                else [(s.number, fields) for s, fields in zip(wt.steps, steps)])
    if len(numbered) < len(steps):
        raise Invalid(f"{wt.name} has {len(wt.steps)} steps, not {len(steps)}",
                      [{"field": "steps", "message": f"at most {len(wt.steps)}"}])
    previous: dict[str, Any] = {}
    validated: list[tuple[int, dict[str, Any]]] = []
    for number, fields in sorted(numbered, key=lambda item: item[0]):
        step = step_of(wt, number)
        data = validate_step(step, fields, StepContext(user_id=user_id, previous=previous, session=session))
        validated.append((number, data))
        previous = {**previous, **data}
    context = StepContext(user_id=user_id, previous=previous, session=session)
    spec = validate_spec(wt, previous, context) if trigger else None

    wf = Workflow(user_id=user_id, workflow_type=wt.name, total_steps=total_steps or len(wt.steps), name=name,
                  description=description)
    session.add(wf)
    for number, data in validated:
        put_step(session, wf, number, data)
    _commit(session)
    session.refresh(wf)
    if spec is not None:
        try:
            start(session, wt, wf, spec)
        except Exception:
            discard(session, wf.id)  # a refused or failed start leaves nothing stored
            raise
    return wf


def resolve_type(workflow_type: str) -> str:
    """weft's workflow type for a name of document 000 (`fine-tuning`) or weft's own."""
    type_name = ALIASES.get(workflow_type, workflow_type)
    if type_name not in REGISTRY:
        raise Invalid(f"unknown workflow_type {workflow_type}",
                      details={"field": "workflow_type", "allowed": sorted([*ALIASES, *REGISTRY])})
    return type_name


def steps_of_config(session: Session, user_id: str, type_name: str, name: str,
                    config: dict[str, Any]) -> list[dict[str, Any]]:
    """The step bodies of a workflow created from one `config` (raises `jobs.InvalidConfig` for a bad
    document-000 fine-tuning config)."""
    if type_name == WorkflowName.FINE_TUNE and "model" in config:  # document 000's shape
        step1, step2 = jobs.job_steps(session, user_id, jobs.job_config_of_workflow(name, config))
        return [step1, step2]
    wt = get_type(type_name)  # weft's own shape: the merged spec
    return [{k: v for k, v in config.items() if k in step.model.model_fields} for step in wt.steps]


def create_from_config(session: Session, user_id: str, workflow_type: str, name: str, description: str | None,
                       config: dict[str, Any]) -> Workflow:
    """Document 000's `POST /workflows`: store every step of a workflow from one config (not started)."""
    type_name = resolve_type(workflow_type)
    bodies = steps_of_config(session, user_id, type_name, name, config)
    return create(session, user_id, type_name, bodies, name=name, description=description)
