"""Inference through the gateway: OpenAI-compatible /v1/completions and /v1/chat/completions (`model`
is an endpoint name), document 000's predict and batch-predict (by model id), document 003's
deployment test. Every request is recorded after its response is sent."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlmodel import Session, col, select

from api.deps import CurrentUser, CurrentUserId, SessionDep, gateway, get_owned
from api.errors import ApiError
from api.gateway import CACHE_SECONDS, Result, prompt_text
from weft.clock import utcnow
from weft.db import get_engine
from weft.schemas.inference import (
    SSE_RESPONSE,
    BatchItem,
    BatchItemError,
    BatchItemOut,
    BatchOut,
    BatchRequest,
    ChatCompletionResponse,
    CompletionResponse,
    DeploymentTestOut,
    DetokenizeResponse,
    Generation,
    OpenAIModel,
    OpenAIModelList,
    PredictionOut,
    PredictRequest,
    TestRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from weft.serving.revisions import endpoint_named as endpoint_called
from weft.statuses import SERVING, EndpointKind
from weft.tables import Endpoint, Revision

router = APIRouter(tags=["inference"])  # /api/v1/...
openai_router = APIRouter(tags=["inference"])  # /v1/..., where OpenAI clients look


# Gateway handlers read the database in short sessions of their own (see deps.current_user_id): a
# request waiting on a replica must not hold one of the pool's connections.

def _endpoint_named(user_id: str, name: str | None) -> Endpoint:
    with Session(get_engine()) as session:
        endpoint = endpoint_called(session, name or "")
    if endpoint is None or endpoint.user_id != user_id:
        raise ApiError(404, "NOT_FOUND", f"no endpoint named {name!r}: `model` is the slug or name of one of your "
                       "endpoints", {"model": name})
    if endpoint.kind == EndpointKind.CLASSIC:
        raise ApiError(400, "INVALID_INPUT", f"{name!r} is a classic model: POST its inputs to "
                       f"/api/v1/predict/{endpoint.id}", {"model": name})
    return endpoint


def _endpoint_of_model(user_id: str, model_id: str) -> Endpoint:
    from weft.tables import Model

    with Session(get_engine()) as session:
        get_owned(session, Model, model_id, user_id, "model")
        endpoint = session.exec(select(Endpoint).join(Revision, Revision.endpoint_id == Endpoint.id)
                                .where(Revision.model_id == model_id, Revision.traffic > 0,
                                       Endpoint.user_id == user_id, col(Endpoint.status).in_(SERVING))
                                .order_by(col(Endpoint.created_at).desc())).first() or session.exec(
            select(Endpoint).where(Endpoint.model_id == model_id, Endpoint.user_id == user_id,
                                   col(Endpoint.status).in_(SERVING)).order_by(col(Endpoint.created_at).desc())).first()
    if endpoint is None:
        raise ApiError(503, "SERVICE_UNAVAILABLE", f"model {model_id} has no active endpoint: deploy it first",
                       {"model_id": model_id})
    return endpoint


def _endpoint_by_id(user_id: str, endpoint_id: str) -> Endpoint:
    with Session(get_engine()) as session:
        return get_owned(session, Endpoint, endpoint_id, user_id, "deployment")


async def endpoint_named(request: Request, user_id: str, name: str | None) -> Endpoint:
    """The caller's endpoint called `name` (404 otherwise), re-read at most every CACHE_SECONDS (or after
    this process changed it: `Gateway.forget`)."""
    named, key, now = gateway(request).named, (user_id, name), time.monotonic()
    hit = named.get(key)
    if hit and hit[0] > now:
        return hit[1]
    endpoint = await anyio.to_thread.run_sync(_endpoint_named, user_id, name)
    if len(named) > 10_000:
        named.clear()
    named[key] = (now + CACHE_SECONDS, endpoint)
    return endpoint


async def endpoint_of_model(user_id: str, model_id: str) -> Endpoint:
    """The model's active endpoint (the newest), else 503 (or 404 for a model that is not yours)."""
    return await anyio.to_thread.run_sync(_endpoint_of_model, user_id, model_id)


async def forward(request: Request, endpoint: Endpoint, user_id: str, path: str, body: dict[str, Any] | None,
                  method: str = "POST") -> Result:
    """Call the endpoint; a failure is recorded too before it propagates."""
    try:
        return await gateway(request).call(endpoint, path, body, method)
    except ApiError as exc:
        gateway(request).record(endpoint.id, None, user_id, path, 0.0, exc.status, None, prompt_text(body),
                                exc.message)
        raise


def recorded(request: Request, result: Result, endpoint: Endpoint, user_id: str, route: str, body: dict[str, Any],
             content: dict[str, Any]) -> JSONResponse:
    error = (result.body.get("error") or {}).get("message") if result.status_code >= 400 else None
    gateway(request).record(endpoint.id, result.replica_id, user_id, route, result.latency_ms, result.status_code,
                            result.body, prompt_text(body), error)
    return JSONResponse(content, status_code=result.status_code)


def last_usage(tail: bytes) -> dict[str, Any] | None:
    """The `usage` of the last SSE chunk that has one (sent when the client asked for
    `stream_options.include_usage`)."""
    for line in reversed(tail.decode(errors="replace").splitlines()):
        if line.startswith("data: {") and '"usage"' in line:
            try:
                usage = json.loads(line[6:]).get("usage")
            except ValueError:
                continue
            if usage:
                return usage
    return None


async def streamed(request: Request, endpoint: Endpoint, user_id: str, path: str, body: dict[str, Any]) -> Response:
    """Relay a `stream: true` response chunk by chunk; recorded when the stream ends."""
    gw, start = gateway(request), time.perf_counter()
    try:
        target, upstream = await gw.stream(endpoint, path, body)
    except ApiError as exc:
        gw.record(endpoint.id, None, user_id, path, 0.0, exc.status, None, prompt_text(body), exc.message)
        raise
    if upstream.status >= 400:
        payload = await upstream.json(content_type=None)
        upstream.release()
        gw.record(endpoint.id, target.replica_id, user_id, path, (time.perf_counter() - start) * 1000,
                  upstream.status, payload, prompt_text(body), str(payload)[:500])
        return JSONResponse(payload, status_code=upstream.status)
    key = target.replica_id or "proxy"
    gw.in_flight[key] += 1

    async def relay() -> AsyncIterator[bytes]:
        tail = b""
        try:
            async for chunk in upstream.content.iter_any():
                tail = (tail + chunk)[-8192:]
                yield chunk
        finally:
            upstream.release()
            gw.in_flight[key] -= 1
            usage = last_usage(tail)
            gw.record(endpoint.id, target.replica_id, user_id, path, (time.perf_counter() - start) * 1000,
                      upstream.status, {"usage": usage} if usage else None, prompt_text(body))

    return StreamingResponse(relay(), media_type=upstream.headers.get("Content-Type", "text/event-stream"),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def openai_call(request: Request, endpoint: Endpoint, user_id: str, path: str,
                      body: dict[str, Any]) -> Response:
    if body.get("stream"):
        return await streamed(request, endpoint, user_id, path, body)
    result = await forward(request, endpoint, user_id, path, body)
    content = {**result.body, "model": endpoint.name} if result.status_code < 400 else result.body
    return recorded(request, result, endpoint, user_id, path, body, content)


def openai_route(path: str):
    """`model` names the endpoint (what OpenAI clients send to one base URL)."""
    async def handler(request: Request, user_id: CurrentUserId, body: dict[str, Any] = Body(...)) -> Response:
        return await openai_call(request, await endpoint_named(request, user_id, body.get("model")), user_id, path, body)

    handler.__name__ = f"openai_{path.strip('/').replace('/', '_')}"
    return handler


def endpoint_route(path: str, method: str = "POST"):
    """`/endpoints/{name}/...`: one endpoint per base URL, with vLLM's tokenizer routes beside the
    OpenAI ones, so lm-eval's `local-completions` tokenizes remotely without a hub download."""
    async def handler(name: str, request: Request, user_id: CurrentUserId) -> Response:
        endpoint = await endpoint_named(request, user_id, name)
        body = await request.json() if method == "POST" else None
        if path.startswith("/v1/"):
            return await openai_call(request, endpoint, user_id=user_id, path=path, body=body)
        result = await forward(request, endpoint, user_id, path, body, method)
        return JSONResponse(result.body, status_code=result.status_code)

    handler.__name__ = f"endpoint_{path.strip('/').replace('/', '_')}"
    return handler


# (path, the JSON body a replica answers with); both also stream SSE with `stream: true`
for _path, _model in (("/v1/completions", CompletionResponse), ("/v1/chat/completions", ChatCompletionResponse)):
    openai_router.add_api_route(_path, openai_route(_path), methods=["POST"], response_model=_model,
                                responses=SSE_RESPONSE,
                                summary=f"OpenAI {_path.rsplit('/', 1)[1]} (model = endpoint name)")
    openai_router.add_api_route(f"/endpoints/{{name}}{_path}", endpoint_route(_path), methods=["POST"],
                                response_model=_model, responses=SSE_RESPONSE,
                                summary=f"OpenAI {_path.rsplit('/', 1)[1]} of one endpoint")
for _path, _method, _model in (("/tokenize", "POST", TokenizeResponse), ("/detokenize", "POST", DetokenizeResponse),
                               ("/tokenizer_info", "GET", TokenizerInfo)):
    openai_router.add_api_route(f"/endpoints/{{name}}{_path}", endpoint_route(_path, _method), methods=[_method],
                                response_model=_model, summary=f"vLLM's {_path} of one endpoint's model")


@openai_router.get("/v1/models", response_model=OpenAIModelList)
def openai_models(user: CurrentUser, session: SessionDep) -> OpenAIModelList:
    """The caller's serving endpoints, as OpenAI models by slug (OpenAI's list shape: not paged)."""
    rows = session.exec(select(Endpoint).where(Endpoint.user_id == user.id, col(Endpoint.status).in_(SERVING))
                        .order_by(col(Endpoint.created_at), col(Endpoint.id)))
    return OpenAIModelList(data=[OpenAIModel(id=e.slug or e.name, created=int(e.created_at.timestamp()))
                                 for e in rows])


def completion_body(prompt: str, g: Generation) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": g.max_tokens, "temperature": g.temperature, "top_p": g.top_p}


def failed(result: Result) -> ApiError:
    message = (result.body.get("error") or {}).get("message") or str(result.body)[:300]
    return ApiError(502 if result.status_code >= 500 else result.status_code, "INFERENCE_ERROR", message)


@router.post("/inference/predict", response_model=PredictionOut)
async def predict(body: PredictRequest, request: Request, user_id: CurrentUserId) -> JSONResponse:
    endpoint = await endpoint_of_model(user_id, body.model_id)
    payload = completion_body(body.prompt, body)
    result = await forward(request, endpoint, user_id, "/v1/completions", payload)
    if result.status_code >= 400:
        raise failed(result)
    choice, usage = result.body["choices"][0], result.body.get("usage", {})
    out = PredictionOut(id=f"pred_{uuid.uuid4().hex[:12]}", model_id=body.model_id, output=choice["text"],
                        tokens_input=usage.get("prompt_tokens"), tokens_output=usage.get("completion_tokens"),
                        finish_reason=choice.get("finish_reason"), latency_ms=round(result.latency_ms, 1),
                        created_at=utcnow())
    return recorded(request, result, endpoint, user_id, "/inference/predict", payload, out.model_dump(mode="json"))


@router.post("/inference/batch-predict", response_model=BatchOut)
async def batch_predict(body: BatchRequest, request: Request, user_id: CurrentUserId) -> BatchOut:
    """Every prompt through the gateway concurrently (spread over the replicas); totals are measured."""
    endpoint = await endpoint_of_model(user_id, body.model_id)
    results: list[BatchItemOut | BatchItemError | None] = [None] * len(body.requests)
    latencies: list[float] = []

    async def one(index: int, item: BatchItem) -> None:
        payload = completion_body(item.prompt, body)
        result = await forward(request, endpoint, user_id, "/v1/completions", payload)
        gateway(request).record(endpoint.id, result.replica_id, user_id, "/inference/batch-predict",
                                result.latency_ms, result.status_code, result.body, item.prompt)
        if result.status_code >= 400:
            results[index] = BatchItemError(id=item.id, error=failed(result).message)
            return
        choice, usage = result.body["choices"][0], result.body.get("usage", {})
        latencies.append(result.latency_ms)
        results[index] = BatchItemOut(id=item.id, output=choice["text"], tokens_input=usage.get("prompt_tokens", 0),
                                      tokens_output=usage.get("completion_tokens", 0),
                                      finish_reason=choice.get("finish_reason"))

    limit = anyio.CapacityLimiter(32)

    async def bounded(index: int, item: BatchItem) -> None:
        async with limit:
            await one(index, item)

    async with anyio.create_task_group() as group:
        for index, item in enumerate(body.requests):
            group.start_soon(bounded, index, item)
    ok = [r for r in results if isinstance(r, BatchItemOut)]
    return BatchOut(id=f"batch_{uuid.uuid4().hex[:12]}", results=[r for r in results if r is not None],
                    total_tokens_input=sum(r.tokens_input for r in ok),
                    total_tokens_output=sum(r.tokens_output for r in ok),
                    avg_latency_ms=round(sum(latencies) / len(latencies), 1) if latencies else None,
                    created_at=utcnow())


@router.post("/deployments/{deployment_id}/test", response_model=DeploymentTestOut)
async def test_deployment(deployment_id: str, body: TestRequest, request: Request,
                          user_id: CurrentUserId) -> JSONResponse:
    """Document 003: one completion through the gateway with its measured latency."""
    endpoint = await anyio.to_thread.run_sync(_endpoint_by_id, user_id, deployment_id)
    payload = completion_body(body.prompt, body)
    result = await forward(request, endpoint, user_id, "/v1/completions", payload)
    if result.status_code >= 400:
        raise failed(result)
    out = DeploymentTestOut(response=result.body["choices"][0]["text"], latency_ms=round(result.latency_ms, 1),
                            tokens_generated=result.body.get("usage", {}).get("completion_tokens"))
    return recorded(request, result, endpoint, user_id, "/deployments/test", payload, out.model_dump(mode="json"))
