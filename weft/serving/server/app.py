"""The FastAPI app: `create_app`, OpenAI-format error handlers and the routes (reading `app.state.server`)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from weft.serving.server.engine import Engine
from weft.serving.server.errors import OpenAIError
from weft.serving.server.logprobs import chat_logprobs, completion_logprobs
from weft.serving.server.protocol import (
    AdapterChange,
    ChatChoice,
    ChatCompletionResponse,
    ChatMessage,
    ChatRequest,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    HealthResponse,
    LoadAdapterRequest,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
    UnloadAdapterRequest,
    Usage,
)
from weft.serving.server.state import Server, ServerState
from weft.serving.server.stops import stop_list
from weft.serving.server.streaming import sse, stream_chat, stream_completions
from weft.serving.server.types import DEFAULT_MAX_BATCH, GenParams

log = logging.getLogger(__name__)
DISCONNECT_POLL_SECONDS = 0.5  # how often a waiting non-streamed request checks its client is still there

__all__ = ["create_app"]


def create_app(model_dir: Path, served_name: str, adapters: dict[str, Path] | None = None,
               default_adapter: str | None = None, device: str | None = None,
               max_batch: int = DEFAULT_MAX_BATCH) -> FastAPI:
    """An OpenAI-compatible FastAPI app for the causal LM in `model_dir`, served as `served_name`.

    `adapters` (name -> PEFT adapter folder): a request naming an adapter uses it; `served_name` uses the
    base model, or `default_adapter` (one of `adapters`) when given (the server then serves the fine-tune).
    Up to `max_batch` concurrent sequences are decoded together (1: one at a time)."""
    model_dir, adapters = Path(model_dir), {k: Path(v) for k, v in (adapters or {}).items()}
    if served_name in adapters:
        raise ValueError(f"adapter name {served_name!r} clashes with the served model name")
    if default_adapter is not None and default_adapter not in adapters:
        raise ValueError(f"default adapter {default_adapter!r} is not one of the adapters {sorted(adapters)}")
    engine = Engine(model_dir, adapters, device=device, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title=f"weft OpenAI-compatible server ({served_name})", lifespan=lifespan)
    app.state.server = ServerState(engine=engine, served_name=served_name, model_dir=model_dir, adapters=adapters,
                                   default_adapter=default_adapter)
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(router)
    return app


# ------------------------------------------------------------------ errors


async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
    return exc.response()


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.exception("request failed")
    return OpenAIError(500, f"{type(exc).__name__}: {exc}", type_="internal_server_error").response()


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    param = ".".join(str(p) for p in errors[0].get("loc", ())[1:]) if errors else None
    msg = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors)
    return OpenAIError(400, msg or "invalid request", param=param or None).response()


# ------------------------------------------------------------------ info and tokenizer routes

router = APIRouter()


@router.get("/health")
async def health(server: Server) -> HealthResponse:
    return HealthResponse(model=server.served_name, active_requests=server.stats.active,
                          served_requests=server.stats.served, max_batch=server.engine.batcher.max_batch,
                          running_sequences=server.engine.batcher.load)


@router.get("/v1/models")
async def models(server: Server) -> ModelList:
    max_len = server.engine.max_model_len
    data = [ModelCard(id=server.served_name, created=server.created, root=str(server.model_dir),
                      max_model_len=max_len)]
    data += [ModelCard(id=name, created=server.created, root=str(path), parent=server.served_name,
                       max_model_len=max_len) for name, path in server.adapters.items()]
    return ModelList(data=data)


@router.post("/tokenize", response_model_exclude_none=True)
async def tokenize(body: TokenizeRequest, server: Server) -> TokenizeResponse:
    engine = server.engine
    if body.model is not None:
        server.resolve(body.model)
    if body.messages is not None:
        text = engine.chat_prompt(body.messages, add_generation_prompt=body.add_generation_prompt)
        ids = engine.encode(text, bool(body.add_special_tokens))
    elif body.prompt is not None:
        ids = engine.encode(body.prompt, True if body.add_special_tokens is None else body.add_special_tokens)
    else:
        raise OpenAIError(400, "give `prompt` or `messages`")
    token_strs = engine.tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=engine.max_model_len, token_strs=token_strs)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, server: Server) -> DetokenizeResponse:
    if body.model is not None:
        server.resolve(body.model)
    server.engine.check_token_ids(body.tokens, "tokens")
    return DetokenizeResponse(prompt=server.engine.decode(body.tokens, skip_special_tokens=False))


@router.get("/tokenizer_info")
async def tokenizer_info(server: Server) -> TokenizerInfo:
    engine, tok = server.engine, server.engine.tokenizer

    def s(v: Any) -> str | None:  # special tokens may be AddedToken objects
        return None if v is None else str(v)

    return TokenizerInfo(
        tokenizer_class=type(tok).__name__, eos_token=s(tok.eos_token), bos_token=s(tok.bos_token),
        pad_token=s(tok.pad_token), unk_token=s(tok.unk_token), eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
        chat_template=getattr(tok, "chat_template", None), model_max_length=engine.max_model_len,
        max_model_len=engine.max_model_len, vocab_size=engine.vocab_size,
        add_bos_token=bool(getattr(tok, "add_bos_token", False)),
        add_eos_token=bool(getattr(tok, "add_eos_token", False)),
        clean_up_tokenization_spaces=bool(getattr(tok, "clean_up_tokenization_spaces", False)))


# ------------------------------------------------------------------ adapters at run time (vLLM's routes)


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(body: LoadAdapterRequest, server: Server) -> AdapterChange:
    """Serve one more LoRA adapter of the base as `lora_name` (requests name it as their `model`)."""
    if body.lora_name == server.served_name or body.lora_name in server.adapters:
        raise OpenAIError(400, f"The lora adapter '{body.lora_name}' has already been loaded.", param="lora_name")
    path = Path(body.lora_path)
    if not (path / "adapter_config.json").is_file():
        raise OpenAIError(400, f"no PEFT adapter (adapter_config.json) in {path}", param="lora_path")
    await server.engine.load_adapter(body.lora_name, path)
    server.adapters[body.lora_name] = path
    log.info("loaded adapter %s from %s", body.lora_name, path)
    return AdapterChange(lora_name=body.lora_name, loaded=True)


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(body: UnloadAdapterRequest, server: Server) -> AdapterChange:
    if body.lora_name not in server.adapters or body.lora_name == server.default_adapter:
        raise OpenAIError(404, f"The lora adapter '{body.lora_name}' cannot be found.", param="lora_name")
    del server.adapters[body.lora_name]  # new requests for it are refused before it goes
    await server.engine.unload_adapter(body.lora_name)
    return AdapterChange(lora_name=body.lora_name, loaded=False)


# ------------------------------------------------------------------ generation routes


async def _while_connected(request: Request, jobs: list[Awaitable[Any]]) -> list[Any]:
    """The jobs' results; should the client go first, its sequences are cancelled (they leave the batch at
    the next step instead of decoding for nobody)."""
    gathered = asyncio.gather(*jobs)
    while True:
        done, _ = await asyncio.wait({gathered}, timeout=DISCONNECT_POLL_SECONDS)
        if done:
            return gathered.result()
        if await request.is_disconnected():
            gathered.cancel()
            raise OpenAIError(400, "the client disconnected")


def _gen_params(body: CompletionRequest | ChatRequest, max_tokens: int) -> GenParams:
    return GenParams(max_tokens=max_tokens, temperature=body.temperature or 0.0, top_p=body.top_p or 1.0,
                     stop=stop_list(body.stop), seed=body.seed)


@router.post("/v1/completions", response_model=CompletionResponse)
async def completions(body: CompletionRequest, server: Server, request: Request) -> CompletionResponse | StreamingResponse:
    engine = server.engine
    adapter = server.resolve(body.model)
    prompts = engine.completion_prompts(body.prompt)
    for p in prompts:
        engine.check_token_ids(p, "prompt")
    requested = body.max_tokens if body.max_tokens is not None else 16
    jobs = [(p, _gen_params(body, engine.max_new_tokens(len(p), requested))) for p in prompts]
    rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        return sse(stream_completions(engine, rid, now, body, adapter, jobs), server.stats)
    choices: list[CompletionChoice] = []
    completion_tokens = 0
    with server.stats.track():  # every choice of every prompt is queued at once: they are decoded together
        results = await _while_connected(request, [engine.submit(p, params.for_choice(j), adapter,
                                                                 logprobs=body.logprobs)
                                                   for p, params in jobs for j in range(body.n)])
    for index, (res, lps) in enumerate(results):
        p = jobs[index // body.n][0]
        completion_tokens += len(res.token_ids)
        prefix = engine.decode(p) if body.echo else ""
        logprobs = None
        if body.logprobs is not None and lps is not None:
            logprobs = completion_logprobs(lps, p, res.token_ids, body.echo, engine.token_str)
        choices.append(CompletionChoice(index=index, text=prefix + res.text, logprobs=logprobs,
                                        finish_reason=res.finish_reason))
    prompt_tokens = sum(len(p) for p, _ in jobs)
    return CompletionResponse(id=rid, created=now, model=body.model, choices=choices,
                              usage=Usage.of(prompt_tokens, completion_tokens))


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat(body: ChatRequest, server: Server, request: Request) -> ChatCompletionResponse | StreamingResponse:
    engine = server.engine
    adapter = server.resolve(body.model)
    if not body.messages:
        raise OpenAIError(400, "`messages` must not be empty", param="messages")
    text = engine.chat_prompt(body.messages, add_generation_prompt=body.add_generation_prompt,
                              **(body.chat_template_kwargs or {}))
    p = engine.encode(text, False)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    params = _gen_params(body, engine.max_new_tokens(len(p), requested))
    rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    k = (body.top_logprobs or 0) if body.logprobs else None
    if body.stream:
        return sse(stream_chat(engine, rid, now, body, adapter, p, params), server.stats)
    choices: list[ChatChoice] = []
    completion_tokens = 0
    with server.stats.track():
        results = await _while_connected(request, [engine.submit(p, params.for_choice(j), adapter, logprobs=k)
                                                   for j in range(body.n)])
    for j, (res, lps) in enumerate(results):
        completion_tokens += len(res.token_ids)
        logprobs = chat_logprobs(lps, len(p), res.token_ids, engine.token_str) if lps is not None else None
        choices.append(ChatChoice(index=j, message=ChatMessage(content=res.text), logprobs=logprobs,
                                  finish_reason=res.finish_reason))
    return ChatCompletionResponse(id=rid, created=now, model=body.model, choices=choices,
                                  usage=Usage.of(len(p), completion_tokens))

