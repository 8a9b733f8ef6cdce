"""Driving the real stack through document 004's step sequences."""

from __future__ import annotations

import time

import httpx

LOCAL = "/api/v1/models/local-model-workflow"
DEPLOY = "/api/v1/models/deploy-workflow"
CHAT_TEMPLATE_ID = "7a2c1e00-0000-4000-8000-000000000001"


def register(api: httpx.Client, name: str) -> dict[str, str]:
    r = api.post("/api/v1/auth/register", json={"email": f"{name}@example.com", "username": name,
                                                  "password": "correct-horse-battery"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def local_steps(provider: str, uri: str, name: str = "tiny llama") -> list[dict]:
    """Document 004's add-local-model sequence (workflow_id is filled in as it is returned)."""
    return [
        {"workflow_total_steps": 6, "step_number": 1, "trigger_workflow": False, "modality": "llm"},
        {"step_number": 2, "trigger_workflow": False, "provider_type": provider},
        {"step_number": 3, "trigger_workflow": False, "name": name, "uri": uri, "author": "weft-tests",
         "tags": [{"name": "text-generation", "color": "#66d1DF"}], "icon": None},
        {"step_number": 4, "trigger_workflow": True, "proprietary_credential_id": None},
    ]


def tiny_deploy_steps(model_id: str, endpoint_name: str) -> list[dict]:
    """The deploy workflow's steps for the tiny model: the chat template, one replica, one sequence at a time."""
    return [{"workflow_total_steps": 5, "step_number": 1, "model_id": model_id, "project_id": "p1"},
            {"step_number": 2, "template_id": CHAT_TEMPLATE_ID},
            {"step_number": 3, "endpoint_name": endpoint_name, "deploy_config": {
                "concurrent_requests": 1, "avg_sequence_length": 16, "avg_context_length": 64,
                "per_session_tokens_per_sec": [1, 100], "ttft": [50, 1000], "e2e_latency": [100, 100000]}},
            {"step_number": 5, "trigger_workflow": True}]


def post_sequence(api, headers, path: str, steps: list[dict]) -> dict:
    workflow_id = None
    body = {}
    for step in steps:
        payload = {**step, **({"workflow_id": workflow_id} if workflow_id else {})}
        r = api.post(path, json=payload, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        workflow_id = body["workflow_id"]
    return body


def wait_status(api, headers, workflow_id: str, statuses: set[str], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/workflows/{workflow_id}", headers=headers).json()
        if body["status"] in statuses:
            return body
        time.sleep(0.5)
    raise AssertionError(f"workflow {workflow_id} stayed {body['status']}: {body}")


def onboard_from_disk(api, headers, folder, name: str) -> str:
    """Onboard the model folder through document 004's steps; its id once the workflow completed."""
    body = post_sequence(api, headers, LOCAL, local_steps("disk", str(folder), name=name))
    assert wait_status(api, headers, body["workflow_id"], {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    return next(m["id"] for m in api.get("/api/v1/models", params={"name": name}, headers=headers).json()["data"]
                if m["name"] == name)
