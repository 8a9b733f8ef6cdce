"""Streaming answers: completion and chat chunks while generating, sent as server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from weft.serving.server.engine import Engine, generate_stream
from weft.serving.server.errors import OpenAIError
from weft.serving.server.protocol import ChatRequest, CompletionRequest, Usage
from weft.serving.server.state import Stats
from weft.serving.server.types import GenParams


def _event(object_: str, rid: str, created: int, model: str, choices: list[dict[str, Any]],
           usage: Usage | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"id": rid, "object": object_, "created": created, "model": model, "choices": choices}
    if usage is not None:
        event["usage"] = usage.model_dump()
    return event


async def stream_completions(engine: Engine, rid: str, now: int, body: CompletionRequest, adapter: str | None,
                             jobs: list[tuple[list[int], GenParams]]) -> AsyncIterator[dict[str, Any]]:
    """`text_completion` chunks for each job's `body.n` choices, then the usage when asked for."""
    def chunk(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        return _event("text_completion", rid, now, body.model,
                      [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}])

    prompt_tokens = completion_tokens = 0
    for i, (p, params) in enumerate(jobs):
        prompt_tokens += len(p)
        for j in range(body.n):
            index = i * body.n + j
            if body.echo:
                yield chunk(index, engine.decode(p))
            async for kind, value in generate_stream(engine, p, params, adapter):
                if kind == "text":
                    yield chunk(index, value)
                else:
                    completion_tokens += len(value.token_ids)
                    yield chunk(index, "", value.finish_reason)
    if (body.stream_options or {}).get("include_usage"):
        yield _event("text_completion", rid, now, body.model, [], Usage.of(prompt_tokens, completion_tokens))


async def stream_chat(engine: Engine, rid: str, now: int, body: ChatRequest, adapter: str | None, p: list[int],
                      params: GenParams) -> AsyncIterator[dict[str, Any]]:
    """`chat.completion.chunk`s for each of `body.n` choices (role first, then content deltas), then the usage."""
    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return _event("chat.completion.chunk", rid, now, body.model,
                      [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}])

    completion_tokens = 0
    for j in range(body.n):
        yield chunk(j, {"role": "assistant", "content": ""})
        async for kind, value in generate_stream(engine, p, params.for_choice(j), adapter):
            if kind == "text":
                yield chunk(j, {"content": value})
            else:
                completion_tokens += len(value.token_ids)
                yield chunk(j, {}, value.finish_reason)
    if (body.stream_options or {}).get("include_usage"):
        yield _event("chat.completion.chunk", rid, now, body.model, [], Usage.of(len(p), completion_tokens))


def sse(events: AsyncIterator[dict[str, Any]], stats: Stats) -> StreamingResponse:
    """`events` as server-sent events ending with [DONE]; an OpenAIError mid-stream becomes an error event."""
    async def body() -> AsyncIterator[bytes]:
        stats.start()
        ok = False
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
            yield b"data: [DONE]\n\n"
            ok = True
        except OpenAIError as e:
            yield f"data: {json.dumps({'error': {'message': e.message, 'type': e.type, 'code': e.code}})}\n\n".encode()
            yield b"data: [DONE]\n\n"
        finally:
            stats.end(ok)

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
