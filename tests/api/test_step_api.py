"""Document 004's step API as a typed contract, and the workflow service's errors through HTTP.

Each step route's request body in /openapi.json is a union discriminated on `step_number` whose members
are the workflow type's step models merged with the envelope; a body built from a member's schema is
the shape the service accepts. The service's domain errors keep the step API's statuses, codes and
messages (`api.errors` maps them once)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import select

from api.errors import install_error_handlers
from api.routers.workflows import STEP_ROUTES
from tests.helpers.api import assert_error, me
from weft.errors import Conflict, Invalid, NotFound, Refused, Unavailable
from weft.specs import get_type

API = "/api/v1"
ENVELOPE = {"workflow_id", "workflow_total_steps", "step_number", "trigger_workflow"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The served /openapi.json (no lifespan: no database or Prefect needed)."""
    from api.main import create_app

    return TestClient(create_app()).get("/openapi.json").json()


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def members(spec: dict[str, Any], path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The request body schema of a step route and its resolved members."""
    body = spec["paths"][API + path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return body, [resolve(spec, m) for m in body.get("oneOf", [])]


def example(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A value of `schema` made from its default, const, enum or type (the bounds respected)."""
    schema = resolve(spec, schema)
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return example(spec, next((o for o in options if o.get("type") != "null"), options[0]))
    kind = schema.get("type")
    if kind == "object":
        return {name: example(spec, prop) for name, prop in schema.get("properties", {}).items()
                if name in schema.get("required", [])}
    if kind == "array":
        return [example(spec, schema["items"])] * schema.get("minItems", 0)
    if kind in ("integer", "number"):
        return schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
    if kind == "boolean":
        return False
    return "x" * max(1, schema.get("minLength", 1))


def body_of(spec: dict[str, Any], member: dict[str, Any], first: bool) -> dict[str, Any]:
    """A request from a member's required fields (a new workflow's step also says how many steps)."""
    body = {name: example(spec, member["properties"][name]) for name in member.get("required", [])}
    return {**body, "workflow_total_steps": 4} if first else {**body, "workflow_id": str(uuid.uuid4())}


@pytest.mark.parametrize(("path", "type_name"), STEP_ROUTES)
def test_each_step_route_documents_its_steps_as_a_discriminated_union(spec, path: str, type_name: str):
    wt = get_type(type_name)
    body, resolved = members(spec, path)
    assert body["discriminator"]["propertyName"] == "step_number", body
    assert len(body["oneOf"]) == len(wt.steps)
    assert set(body["discriminator"]["mapping"]) == {str(s.number) for s in wt.steps}
    for step, member in zip(wt.steps, resolved):
        assert member["properties"]["step_number"]["const"] == step.number
        assert set(member["properties"]) == set(step.model.model_fields) | ENVELOPE, member["title"]
        assert "step_number" in member["required"] and member.get("additionalProperties") is False
        required = {n for n, f in step.model.model_fields.items() if f.is_required()}
        assert set(member["required"]) == required | {"step_number"}
        assert body["discriminator"]["mapping"][str(step.number)].endswith("/" + member["title"])


@pytest.mark.parametrize(("path", "type_name"), STEP_ROUTES)
def test_a_body_built_from_each_member_has_the_shape_the_step_takes(spec, path: str, type_name: str):
    """Validated as the service does (without a database: lookups of the caller's rows are skipped), a
    body made from a member's schema has no unknown field, no missing field and the member's step."""
    from weft.schemas.workflows import StepEnvelope

    wt = get_type(type_name)
    _, resolved = members(spec, path)
    for step, member in zip(wt.steps, resolved):
        body = body_of(spec, member, first=step is wt.steps[0])
        envelope = StepEnvelope.model_validate({k: v for k, v in body.items() if k in ENVELOPE})
        assert wt.step(envelope.step_number) is step
        try:
            step.model.model_validate({k: v for k, v in body.items() if k not in ENVELOPE})
        except ValidationError as exc:
            shape = [e for e in exc.errors() if e["type"] in ("missing", "extra_forbidden")]
            assert not shape, f"{type_name} step {step.number}: {shape}"


@pytest.mark.parametrize(("path", "type_name"), STEP_ROUTES)
def test_posting_step_1_built_from_its_schema_is_taken_as_that_step(client, auth_headers, spec, path: str,
                                                                     type_name: str):
    """Through the API: the body is not refused for its shape (unknown step, unknown or missing field);
    what may still fail is a check of the caller's rows (`model x does not exist`)."""
    headers = auth_headers()
    _, resolved = members(spec, path)
    r = client.post(API + path, headers=headers, json=body_of(spec, resolved[0], first=True))
    if r.status_code == 200:
        view = r.json()
        assert (view["workflow_type"], view["current_step"], view["flow_run_id"]) == (type_name, 1, None)
        return
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert "has no step" not in error["message"] and error["message"].startswith("step 1 ("), error
    messages = [e["message"] for e in error["details"]["errors"]]
    assert not [m for m in messages if m in ("Extra inputs are not permitted", "Field required")], error


def test_step_errors_keep_their_shape(client, auth_headers):
    headers = auth_headers()
    local = f"{API}/models/local-model-workflow"
    error = assert_error(client.post(local, headers=headers, json={"step_number": 1}), 422, "VALIDATION_ERROR")
    assert error["message"] == "workflow_total_steps is required to start a workflow"
    assert error["details"]["errors"] == [{"field": "workflow_total_steps", "message": "Field required"}]
    error = assert_error(client.post(local, headers=headers, json={"workflow_total_steps": 4, "step_number": 2}),
                         422, "VALIDATION_ERROR")
    assert error["message"] == "a new workflow starts at step 1"
    assert assert_error(client.post(local, headers=headers, json=[1, 2]), 422, "VALIDATION_ERROR")["message"] == \
        "the request body must be a JSON object"

    view = client.post(local, headers=headers, json={"workflow_total_steps": 4, "step_number": 1}).json()
    wid = view["workflow_id"]
    assert view["data"] == {"modality": "llm"} and view["next_step"] == 2
    error = assert_error(client.post(local, headers=headers, json={"workflow_id": wid, "step_number": 9}),
                         422, "VALIDATION_ERROR")
    assert error["message"] == "add_local_model has no step 9"
    assert error["details"]["errors"] == [{"field": "step_number", "message": "expected one of [1, 2, 3, 4]"}]
    error = assert_error(client.post(local, headers=headers, json={"workflow_id": wid, "step_number": 2,
                                                                   "provider_type": "ftp", "colour": "red"}),
                         422, "VALIDATION_ERROR")
    assert error["message"] == "step 2 (Select provider type) is invalid"
    assert {e["field"] for e in error["details"]["errors"]} == {"provider_type", "colour"}

    # another type's route, another user's workflow, a missing one: 404 NOT_FOUND naming it
    error = assert_error(client.post(f"{API}/models/cloud-model-workflow", headers=headers,
                                     json={"workflow_id": wid, "step_number": 2, "provider_id": "p"}), 404, "NOT_FOUND")
    assert error["message"] == f"add_cloud_model workflow {wid} not found"
    assert_error(client.get(f"{API}/workflows/{wid}", headers=auth_headers()), 404, "NOT_FOUND")
    error = assert_error(client.get(f"{API}/workflows/nope", headers=headers), 404, "NOT_FOUND")
    assert error["details"] == {"resource": "workflow", "id": "nope"}

    # cancel before the trigger, then the conflicts of a finished workflow
    cancelled = client.post(f"{API}/workflows/{wid}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED", cancelled.text
    error = assert_error(client.post(f"{API}/workflows/{wid}/cancel", headers=headers), 409, "CONFLICT")
    assert error["message"] == f"workflow {wid} is already CANCELLED" and error["details"] == {"status": "CANCELLED"}
    error = assert_error(client.post(f"{API}/workflows/{wid}/retry", headers=headers), 409, "CONFLICT")
    assert error["message"].startswith("only a FAILED or CANCELLED run can be retried")
    error = assert_error(client.post(local, headers=headers, json={"workflow_id": wid, "step_number": 2,
                                                                   "provider_type": "disk"}), 409, "CONFLICT")
    assert "steps can no longer change" in error["message"]


def test_an_unreachable_prefect_is_a_503_and_the_steps_stay(client, auth_headers, monkeypatch):
    from weft import runs

    def down(*args, **kwargs):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(runs, "trigger", down)
    headers = auth_headers()
    provider = client.get(f"{API}/providers", headers=headers).json()["data"][0]["id"]
    cloud = f"{API}/models/cloud-model-workflow"
    wid = client.post(cloud, headers=headers, json={"workflow_total_steps": 4, "step_number": 1}).json()["workflow_id"]
    for step in ({"step_number": 2, "provider_id": provider}, {"step_number": 3, "cloud_model_id": None}):
        assert client.post(cloud, headers=headers, json={"workflow_id": wid, **step}).status_code == 200
    r = client.post(cloud, headers=headers, json={"workflow_id": wid, "step_number": 4, "name": "m", "uri": "o/m",
                                                  "trigger_workflow": True})
    error = assert_error(r, 503, "SERVICE_UNAVAILABLE")
    assert error["message"] == "could not start the add_cloud_model flow run: connection refused"
    assert error["details"] == {"flow": "add_cloud_model"}
    view = client.get(f"{API}/workflows/{wid}", headers=headers).json()
    assert (view["current_step"], view["flow_run_id"], view["next_step"]) == (4, None, None)


def test_a_workflow_created_from_one_config_is_all_or_nothing(client, auth_headers):
    """Document 000's create validates every step before storing any: a bad third step leaves nothing."""
    from weft.db import session_scope
    from weft.tables import Workflow

    headers = auth_headers()
    user_id = me(client, headers)["id"]
    config = {"modality": "llm", "provider_type": "disk", "name": "m", "uri": "/definitely/not/here"}
    error = assert_error(client.post(f"{API}/workflows", headers=headers, json={
        "name": "broken", "workflow_type": "add_local_model", "config": config}), 422, "VALIDATION_ERROR")
    assert error["message"] == "step 3 (Add model details) is invalid"
    error = assert_error(client.post(f"{API}/workflows", headers=headers, json={
        "name": "odd", "workflow_type": "knitting", "config": {}}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "workflow_type" and "fine-tuning" in error["details"]["allowed"]
    with session_scope() as s:
        assert s.exec(select(Workflow).where(Workflow.user_id == user_id)).all() == []

    created = client.post(f"{API}/workflows", headers=headers, json={
        "name": "scan later", "description": "d", "workflow_type": "add_cloud_model",
        "config": {"provider_id": client.get(f"{API}/providers", headers=headers).json()["data"][0]["id"],
                   "name": "m", "uri": "o/m"}})
    assert created.status_code == 201, created.text
    assert (created.json()["name"], created.json()["status"]) == ("scan later", "pending")
    listed = client.get(f"{API}/workflows", headers=headers, params={"workflow_type": "add_cloud_model"}).json()
    assert [w["name"] for w in listed["data"]] == ["scan later"] and listed["meta"]["total"] == 1
    error = assert_error(client.get(f"{API}/workflows", headers=headers, params={"workflow_type": "knitting"}),
                         422, "VALIDATION_ERROR")
    assert error["details"]["parameter"] == "workflow_type"


def test_each_service_error_has_one_status():
    app = FastAPI()
    install_error_handlers(app)
    raised = {"/not-found": NotFound.of("thing", "t1"), "/invalid": Invalid("bad", [{"field": "f", "message": "m"}]),
              "/refused": Refused("SCAN_NOT_SAFE", "not safe", {"model_id": "m"}),
              "/conflict": Conflict("taken", {"status": "DONE"}), "/unavailable": Unavailable("busy")}
    def raising(exc: Exception):
        def endpoint() -> None:
            raise exc
        return endpoint

    for path, exc in raised.items():
        app.add_api_route(path, raising(exc))
    client = TestClient(app)
    expected = {"/not-found": (404, "NOT_FOUND", {"resource": "thing", "id": "t1"}),
                "/invalid": (422, "VALIDATION_ERROR", {"errors": [{"field": "f", "message": "m"}]}),
                "/refused": (409, "SCAN_NOT_SAFE", {"model_id": "m"}),
                "/conflict": (409, "CONFLICT", {"status": "DONE"}), "/unavailable": (503, "SERVICE_UNAVAILABLE", {})}
    for path, (status, code, details) in expected.items():
        error = assert_error(client.get(path), status, code)
        assert (error["message"], error["details"]) == (raised[path].message, details)
