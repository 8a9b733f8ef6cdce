"""Inference through the gateway: document 000's predict and batch-predict, document 003's deployment
test, and the OpenAI-compatible routes (their bodies are the ones weft's replicas speak)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime
from weft.serving.server.protocol import (
    ChatCompletionResponse,
    CompletionResponse,
    DetokenizeResponse,
    TokenizeResponse,
    TokenizerInfo,
)

__all__ = ["BatchItem", "BatchItemError", "BatchItemOut", "BatchOut", "BatchRequest", "ChatCompletionResponse",
           "CompletionResponse", "DeploymentTestOut", "DetokenizeResponse", "Generation", "OpenAIModel",
           "OpenAIModelList", "PredictRequest", "PredictionOut", "SSE_RESPONSE", "TestRequest", "TokenizeResponse",
           "TokenizerInfo"]

# --- requests ---------------------------------------------------------------------------------------------

class Generation(BaseModel):
    max_tokens: int = Field(default=256, ge=1, le=32_768)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)


class PredictRequest(Generation):
    model_id: str
    prompt: str = Field(min_length=1)


class BatchItem(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1)


class BatchRequest(Generation):
    model_id: str
    requests: list[BatchItem] = Field(min_length=1, max_length=1000)


class TestRequest(Generation):
    prompt: str = Field(min_length=1)


# --- responses --------------------------------------------------------------------------------------------

class PredictionOut(BaseModel):
    """`POST /inference/predict` (document 000)."""

    id: str = Field(description="pred_...")
    model_id: str
    output: str
    tokens_input: int | None
    tokens_output: int | None
    finish_reason: str | None = Field(description="stop | length")
    latency_ms: float = Field(description="measured at the gateway")
    created_at: UtcDatetime


class BatchItemOut(BaseModel):
    """One answered prompt of a batch."""

    id: str
    output: str
    tokens_input: int
    tokens_output: int
    finish_reason: str | None


class BatchItemError(BaseModel):
    """One prompt of a batch that failed (the others still count)."""

    id: str
    error: str


class BatchOut(BaseModel):
    """`POST /inference/batch-predict` (document 000); totals are over the answered prompts."""

    id: str = Field(description="batch_...")
    results: list[BatchItemOut | BatchItemError] = Field(description="in request order")
    total_tokens_input: int
    total_tokens_output: int
    avg_latency_ms: float | None = Field(description="null when no prompt was answered")
    created_at: UtcDatetime


class DeploymentTestOut(BaseModel):
    """`POST /deployments/{id}/test` (document 003)."""

    response: str
    latency_ms: float
    tokens_generated: int | None


class OpenAIModel(BaseModel):
    id: str = Field(description="the endpoint name: send it as `model`")
    object: Literal["model"] = "model"
    created: int = Field(description="unix seconds")
    owned_by: str = "weft"


class OpenAIModelList(BaseModel):
    """`GET /v1/models`: the caller's active endpoints, in OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "the response; with `stream: true`, server-sent events of chunks ending in `data: [DONE]`",
          "content": {"text/event-stream": {"schema": {"type": "string", "description": "data: {chunk}\\n\\n ..."}}}},
}
"""OpenAPI `responses` of a route that answers JSON, or an SSE stream when the body asks for `stream: true`."""
