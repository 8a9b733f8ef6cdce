"""Assertions on the API's responses, shared by the in-process API tests."""

from __future__ import annotations

from fastapi.testclient import TestClient


def assert_error(r, status: int, code: str) -> dict:
    """`r` is an error of `status`/`code` in weft's format, with a request id and no stack trace."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["details"], dict)
    assert body["request_id"] == r.headers["x-request-id"]
    assert "Traceback" not in r.text
    return body["error"]


def me(client: TestClient, headers: dict[str, str]) -> dict:
    r = client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()
