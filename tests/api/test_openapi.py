"""The typed API contract: every HTTP operation in /openapi.json documents what it returns.

A JSON success response must have a schema naming its fields (a model, a page of models, a union of
models: not `{}` and not a free-form object); a 204 has no body; a route that streams or returns a file
documents its media type (text/event-stream, text/html, application/zip, ...). WebSocket routes are
not in the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app

JSON = "application/json"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The served /openapi.json (without the app's lifespan: no database or Prefect needed)."""
    response = TestClient(create_app()).get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{method.upper()} {path}", op) for path, ops in spec["paths"].items()
            for method, op in ops.items() if method in METHODS]


def typed(schema: dict[str, Any] | None) -> bool:
    """Whether a JSON schema says what the fields are."""
    if not schema:
        return False
    if "$ref" in schema:
        return True
    members = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if members:
        real = [m for m in members if m.get("type") != "null"]
        return bool(real) and all(typed(m) for m in real)
    kind = schema.get("type")
    if kind == "array":
        return typed(schema.get("items"))
    if kind == "object":
        return bool(schema.get("properties"))
    return kind in ("string", "integer", "number", "boolean")


def problem(op: dict[str, Any]) -> str | None:
    """Why an operation's success responses are not documented, or None."""
    success = {code: r for code, r in op.get("responses", {}).items() if code.startswith("2")}
    if not success:
        return "no 2xx response"
    for code, response in success.items():
        content = response.get("content") or {}
        if code == "204":
            return "a 204 with a body" if content else None
        for media_type, body in content.items():
            if media_type == JSON and typed(body.get("schema")):
                return None
            if media_type != JSON and body.get("schema"):  # a stream or a file, with its media type
                return None
    return "no typed content: " + ", ".join(f"{code} {sorted(r.get('content') or {})}" for code, r in success.items())


def test_every_operation_documents_its_success_response(spec):
    missing = [f"{name}: {why}" for name, op in operations(spec) if (why := problem(op))]
    assert not missing, f"{len(missing)} operations without a typed success response:\n" + "\n".join(missing)


def test_paged_lists_take_limit_and_offset(spec):
    """A `Page[...]` response comes from `api.paging.Paging`: limit (1-100) and offset."""
    unpaged = []
    for name, op in operations(spec):
        schema = (op["responses"].get("200", {}).get("content") or {}).get(JSON, {}).get("schema") or {}
        if schema.get("$ref", "").startswith("#/components/schemas/Page_"):
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            if not {"limit", "offset"} <= params:
                unpaged.append(name)
    assert not unpaged, f"paged responses without limit/offset: {unpaged}"


def test_schema_names_are_unique(spec):
    """Two models of one name get module-qualified component names (`api__schemas__x__Name`): rename one."""
    clashes = sorted(name for name in spec["components"]["schemas"] if "__" in name)
    assert not clashes, f"models sharing a name: {clashes}"


@pytest.mark.parametrize(("schema", "expected"), [
    ({}, False), ({"type": "object"}, False), ({"type": "object", "additionalProperties": True}, False),
    ({"$ref": "#/components/schemas/X"}, True), ({"type": "array", "items": {"$ref": "#/x"}}, True),
    ({"type": "array", "items": {}}, False), ({"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}, True),
    ({"anyOf": [{"$ref": "#/x"}, {"type": "object"}]}, False),
])
def test_typed(schema, expected):
    assert typed(schema) is expected
