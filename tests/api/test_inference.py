"""The gateway's inference routes against a stub OpenAI-compatible replica: each body matches its
declared response model (documents 000 and 003, OpenAI's shapes), streams relay SSE, and a failed
prompt of a batch is reported beside the answered ones."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from weft.clock import utcnow
from weft.db import session_scope
from weft.net import free_port
from weft.schemas.inference import (
    BatchOut,
    ChatCompletionResponse,
    CompletionResponse,
    DeploymentTestOut,
    OpenAIModelList,
    PredictionOut,
)
from weft.tables import Endpoint, Model, Replica, Revision

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def stub_replica() -> FastAPI:
    """Answers " ok" to every prompt; the prompt "fail" is a 400; `stream: true` sends two SSE chunks."""
    app = FastAPI()

    def chunks(obj: str, model: str) -> Iterator[bytes]:
        for text in (" o", "k"):
            chunk = {"id": "c1", "object": obj, "created": 1, "model": model,
                     "choices": [{"index": 0, "text": text, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    @app.post("/v1/completions")
    def completions(body: dict[str, Any] = Body(...)) -> Any:
        if body.get("prompt") == "fail":
            return JSONResponse({"error": {"message": "bad prompt"}}, status_code=400)
        if body.get("stream"):
            return StreamingResponse(chunks("text_completion", body["model"]), media_type="text/event-stream")
        return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "text": " ok", "logprobs": None, "finish_reason": "stop"}], "usage": USAGE}

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return {"id": "chat-1", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "logprobs": None,
                             "finish_reason": "stop"}], "usage": USAGE}

    return app


@pytest.fixture(scope="module")
def replica_url() -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(stub_replica(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "stub replica did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def deployed(client, auth_headers, replica_url) -> tuple[dict[str, str], Endpoint]:
    """A user with a model served by one healthy replica (the stub)."""
    headers = auth_headers()
    user_id = client.get("/api/v1/auth/me", headers=headers).json()["id"]
    with session_scope() as s:
        model = Model(user_id=user_id, name="served", provider_type="disk")
        endpoint = Endpoint(user_id=user_id, model_id=model.id, name=f"ep-{uuid.uuid4().hex[:8]}", status="active")
        endpoint.slug = endpoint.name
        revision = Revision(endpoint_id=endpoint.id, number=1, model_id=model.id, traffic=100, replicas=1)
        s.add_all([model, endpoint, revision, Replica(endpoint_id=endpoint.id, revision_id=revision.id,
                                                      state="healthy", url=replica_url, last_seen=utcnow())])
        s.flush()
        s.expunge(endpoint)
    return headers, endpoint


def utc(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert value.tzinfo is not None and text.endswith("Z"), text
    return value


def test_predict_batch_and_deployment_test(client, deployed):
    headers, endpoint = deployed
    r = client.post("/api/v1/inference/predict", headers=headers, json={"model_id": endpoint.model_id, "prompt": "hi"})
    assert r.status_code == 200, r.text
    body = PredictionOut.model_validate(r.json())
    assert (body.output, body.tokens_input, body.tokens_output, body.finish_reason) == (" ok", 3, 2, "stop")
    assert set(r.json()) == set(PredictionOut.model_fields) and body.id.startswith("pred_")
    utc(r.json()["created_at"])

    r = client.post("/api/v1/inference/batch-predict", headers=headers,
                    json={"model_id": endpoint.model_id, "requests": [{"id": "a", "prompt": "hi"},
                                                                      {"id": "b", "prompt": "fail"}]})
    assert r.status_code == 200, r.text
    batch = r.json()
    BatchOut.model_validate(batch)
    assert batch["results"][0] == {"id": "a", "output": " ok", "tokens_input": 3, "tokens_output": 2,
                                   "finish_reason": "stop"}
    assert batch["results"][1] == {"id": "b", "error": "bad prompt"}
    assert (batch["total_tokens_input"], batch["total_tokens_output"]) == (3, 2)
    utc(batch["created_at"])

    r = client.post(f"/api/v1/deployments/{endpoint.id}/test", headers=headers, json={"prompt": "hi"})
    assert r.status_code == 200, r.text
    assert DeploymentTestOut.model_validate(r.json()).tokens_generated == 2
    assert set(r.json()) == {"response", "latency_ms", "tokens_generated"}


def test_openai_routes(client, deployed):
    headers, endpoint = deployed
    listed = OpenAIModelList.model_validate(client.get("/v1/models", headers=headers).json())
    assert [m.id for m in listed.data] == [endpoint.name] and listed.object == "list"

    r = client.post("/v1/completions", headers=headers, json={"model": endpoint.name, "prompt": "hi"})
    assert r.status_code == 200, r.text
    assert CompletionResponse.model_validate(r.json()).model == endpoint.name
    r = client.post("/v1/chat/completions", headers=headers,
                    json={"model": endpoint.name, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert ChatCompletionResponse.model_validate(r.json()).choices[0].message.content == "ok"

    r = client.post("/v1/completions", headers=headers, json={"model": endpoint.name, "prompt": "hi", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == " ok"

    r = client.post("/v1/completions", headers=headers, json={"model": endpoint.name, "prompt": "fail"})
    assert r.status_code == 400 and r.json() == {"error": {"message": "bad prompt"}}  # relayed as it came
