"""weft's own OpenAI-compatible inference server on transformers (used where vLLM is not available, e.g. CPU).

One process serves one base model plus optional PEFT/LoRA adapters (request `model` = adapter name). Routes:
`GET /health`, `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (SSE streaming),
and vLLM's tokenizer routes `POST /tokenize`, `POST /detokenize`, `GET /tokenizer_info` (lm-eval's
`local-completions` uses these as its "remote" tokenizer, so it never needs the hub).

Generation runs in a worker thread, one `generate` at a time (a lock); stop strings are applied to the
decoded text. `max_tokens` is clamped to the context left after the prompt (finish_reason "length").

CLI: python -m weft.serving.openai_server --model DIR --name NAME [--host H] [--port P]
                                          [--adapter name=DIR ...] [--default-adapter name]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

log = logging.getLogger("weft.serving.openai_server")

__all__ = ["create_app", "main", "OpenAIError"]


# ------------------------------------------------------------------ errors


class OpenAIError(Exception):
    """An error answered in OpenAI's format: {"error": {"message", "type", "code", "param"}}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content={"error": {
            "message": self.message, "type": self.type, "code": self.code, "param": self.param}})


# ------------------------------------------------------------------ request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI/vLLM fields are accepted and ignored


class CompletionRequest(_Body):
    model: str
    prompt: str | list[str] | list[int] | list[list[int]] = ""
    max_tokens: int | None = Field(default=16, ge=0)
    temperature: float | None = Field(default=1.0, ge=0)
    top_p: float | None = Field(default=1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=16)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class ChatRequest(_Body):
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=1.0, ge=0)
    top_p: float | None = Field(default=1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=16)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None


class TokenizeRequest(_Body):
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(_Body):
    model: str | None = None
    tokens: list[int]


# ------------------------------------------------------------------ engine


@dataclass
class GenParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None = None


@dataclass
class GenResult:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length"


@dataclass
class _Stats:
    active: int = 0
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        with self.lock:
            self.active += 1

    def end(self, ok: bool) -> None:
        with self.lock:
            self.active -= 1
            self.served += int(ok)


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [s for s in ([stop] if isinstance(stop, str) else stop) if s]


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string (excluded) and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string (or a split UTF-8 char)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    if text.endswith("\ufffd"):
        hold = max(hold, 1)
    return hold


class Engine:
    """The model, tokenizer and adapters; every model call happens under `self.lock` in a worker thread."""

    def __init__(self, model_dir: Path, adapters: dict[str, Path] | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        self.adapters: list[str] = []
        if adapters:
            from peft import PeftModel

            for i, (name, path) in enumerate(adapters.items()):
                if i == 0:
                    model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
                else:
                    model.load_adapter(str(path), adapter_name=name)
                self.adapters.append(name)
        self.model = model.to(self.device).eval()
        self.lock = threading.Lock()
        cfg = getattr(self.model, "config", None)
        ctx = getattr(cfg, "max_position_embeddings", None)
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if not ctx and tok_max and tok_max < 10**8:
            ctx = tok_max
        self.max_model_len = int(ctx or 2048)
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids: list[int] = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    # ---- tokenizer helpers (cheap, fine on the event loop)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def chat_prompt(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                    **kwargs: Any) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise OpenAIError(400, "the model has no chat template; use /v1/completions")
        return self.tokenizer.apply_chat_template(_flatten_messages(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def token_str(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    # ---- model calls (worker thread)

    def _select(self, adapter: str | None):
        """A context manager that activates `adapter` (None = the base model)."""
        import contextlib

        if not self.adapters:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def generate(self, prompt_ids: list[int], params: GenParams, adapter: str | None,
                 on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
                 logprobs: int | None = None) -> tuple[GenResult, list[tuple[int, float, list[tuple[int, float]]]] | None]:
        """Generate a continuation of `prompt_ids`. `on_text` receives text deltas that are safe to show
        (stop strings held back). With `logprobs` (k), also returns for each position of prompt+completion
        after the first: (token id, its logprob, top-k [(id, logprob)])."""
        torch = self.torch
        with self.lock:
            with self._select(adapter):
                gen_ids: list[int] = []
                finish = "length"
                if params.max_tokens > 0:
                    gen_ids, finish = self._generate_locked(prompt_ids, params, on_text, cancel)
                text = self.decode(gen_ids)
                text, hit = _cut_at_stop(text, params.stop)
                if hit:
                    finish = "stop"
                elif gen_ids and gen_ids[-1] in self.eos_ids:
                    finish = "stop"
                lps = None
                if logprobs is not None:
                    with torch.inference_mode():
                        lps = self._logprobs_locked(prompt_ids + gen_ids, logprobs)
        return GenResult(token_ids=gen_ids, text=text, finish_reason=finish), lps

    def _generate_locked(self, prompt_ids: list[int], params: GenParams, on_text, cancel) -> tuple[list[int], str]:
        torch = self.torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        n_prompt = len(prompt_ids)
        engine = self
        state = {"sent": 0, "stopped": False}

        class _Watch(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001
                new = input_ids[0, n_prompt:].tolist()
                done = False
                if params.stop or on_text is not None:
                    text = engine.decode(new)
                    cut, hit = _cut_at_stop(text, params.stop)
                    if hit:
                        state["stopped"] = done = True
                        safe = cut
                    elif new and new[-1] in engine.eos_ids:
                        safe = text
                    else:
                        safe = text[: len(text) - _held_back(text, params.stop)]
                    if on_text is not None and len(safe) > state["sent"]:
                        on_text(safe[state["sent"]:])
                        state["sent"] = len(safe)
                if cancel is not None and cancel.is_set():
                    done = True
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        sample = bool(params.temperature and params.temperature > 0)
        cfg_kwargs: dict[str, Any] = dict(max_new_tokens=params.max_tokens, do_sample=sample,
                                          eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id)
        if sample:
            cfg_kwargs.update(temperature=params.temperature, top_p=params.top_p or 1.0, top_k=0)
        gen_config = GenerationConfig(**cfg_kwargs)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen_config,
                                      stopping_criteria=StoppingCriteriaList([_Watch()]))
        gen_ids = out[0, n_prompt:].tolist()
        # a finished sequence may be padded when generation stops for another reason
        while len(gen_ids) > 1 and gen_ids[-1] == self.pad_id and gen_ids[-2] in self.eos_ids:
            gen_ids.pop()
        if on_text is not None:  # flush what was held back (the final text is cut at stop strings later)
            text, _ = _cut_at_stop(self.decode(gen_ids), params.stop)
            if len(text) > state["sent"]:
                on_text(text[state["sent"]:])
        return gen_ids, ("stop" if state["stopped"] else "length")

    def _logprobs_locked(self, ids: list[int], k: int) -> list[tuple[int, float, list[tuple[int, float]]]]:
        torch = self.torch
        if len(ids) < 2:
            return []
        t = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits = self.model(input_ids=t, attention_mask=torch.ones_like(t)).logits[0, :-1].float()
        lp = torch.log_softmax(logits, dim=-1)
        target = t[0, 1:]
        chosen = lp.gather(1, target[:, None])[:, 0].tolist()
        out: list[tuple[int, float, list[tuple[int, float]]]] = []
        if k > 0:
            top_v, top_i = lp.topk(k, dim=-1)
            tops = [list(zip(i_row, v_row)) for i_row, v_row in zip(top_i.tolist(), top_v.tolist())]
        else:
            tops = [[] for _ in chosen]
        for tok, val, top in zip(target.tolist(), chosen, tops):
            out.append((tok, float(val), [(int(i), float(v)) for i, v in top]))
        return out


def _flatten_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text-only content parts joined into one string (what text chat templates expect)."""
    out = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), list):
            m["content"] = "".join(p.get("text", "") for p in m["content"] if isinstance(p, dict)
                                   and p.get("type", "text") == "text")
        out.append(m)
    return out


# ------------------------------------------------------------------ app


def create_app(model_dir: Path, served_name: str, adapters: dict[str, Path] | None = None,
               default_adapter: str | None = None, device: str | None = None) -> FastAPI:
    """An OpenAI-compatible FastAPI app for the causal LM in `model_dir`, served as `served_name`.

    `adapters` (name -> PEFT adapter folder): a request naming an adapter uses it; `served_name` uses the
    base model, or `default_adapter` (one of `adapters`) when given (the server then serves the fine-tune)."""
    adapters = {k: Path(v) for k, v in (adapters or {}).items()}
    if served_name in adapters:
        raise ValueError(f"adapter name {served_name!r} clashes with the served model name")
    if default_adapter is not None and default_adapter not in adapters:
        raise ValueError(f"default adapter {default_adapter!r} is not one of the adapters {sorted(adapters)}")
    engine = Engine(Path(model_dir), adapters, device=device)
    stats = _Stats()
    created = int(time.time())
    app = FastAPI(title=f"weft OpenAI-compatible server ({served_name})")
    app.state.engine, app.state.stats = engine, stats

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return OpenAIError(500, f"{type(exc).__name__}: {exc}", type_="internal_server_error").response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        param = ".".join(str(p) for p in errors[0].get("loc", ())[1:]) if errors else None
        msg = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors)
        return OpenAIError(400, msg or "invalid request", param=param or None).response()

    def resolve(model: str) -> str | None:
        """The adapter for `model` (None = base); 404 for unknown names."""
        if model == served_name:
            return default_adapter
        if model in adapters:
            return model
        raise OpenAIError(404, f"The model `{model}` does not exist. Available: "
                               f"{', '.join([served_name, *adapters])}", code="model_not_found", param="model")

    def check_len(prompt_len: int, max_tokens: int | None) -> int:
        room = engine.max_model_len - prompt_len
        if room < 0 or (room == 0 and (max_tokens or 0) > 0):
            raise OpenAIError(400, f"This model's maximum context length is {engine.max_model_len} tokens; "
                                   f"the prompt has {prompt_len} tokens.", param="prompt")
        return room if max_tokens is None else min(max_tokens, room)

    # ---- info routes

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": served_name, "active_requests": stats.active,
                "served_requests": stats.served}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": served_name, "object": "model", "created": created, "owned_by": "weft",
                 "root": str(model_dir), "parent": None, "max_model_len": engine.max_model_len}]
        data += [{"id": name, "object": "model", "created": created, "owned_by": "weft", "root": str(path),
                  "parent": served_name, "max_model_len": engine.max_model_len} for name, path in adapters.items()]
        return {"object": "list", "data": data}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        if body.model is not None:
            resolve(body.model)
        if body.messages is not None:
            text = engine.chat_prompt(body.messages, add_generation_prompt=body.add_generation_prompt)
            ids = engine.encode(text, bool(body.add_special_tokens))
        elif body.prompt is not None:
            ids = engine.encode(body.prompt, True if body.add_special_tokens is None else body.add_special_tokens)
        else:
            raise OpenAIError(400, "give `prompt` or `messages`")
        out: dict[str, Any] = {"tokens": ids, "count": len(ids), "max_model_len": engine.max_model_len}
        if body.return_token_strs:
            out["token_strs"] = engine.tokenizer.convert_ids_to_tokens(ids)
        return out

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        if body.model is not None:
            resolve(body.model)
        vocab = len(engine.tokenizer)
        if any(t < 0 or t >= vocab for t in body.tokens):
            raise OpenAIError(400, f"token ids must be in [0, {vocab})", param="tokens")
        return {"prompt": engine.decode(body.tokens, skip_special_tokens=False)}

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        tok = engine.tokenizer

        def s(v: Any) -> Any:
            return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)

        return {"tokenizer_class": type(tok).__name__, "eos_token": s(tok.eos_token), "bos_token": s(tok.bos_token),
                "pad_token": s(tok.pad_token), "unk_token": s(tok.unk_token),
                "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id, "pad_token_id": tok.pad_token_id,
                "chat_template": getattr(tok, "chat_template", None), "model_max_length": engine.max_model_len,
                "max_model_len": engine.max_model_len, "vocab_size": len(tok),
                "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
                "add_eos_token": bool(getattr(tok, "add_eos_token", False)),
                "clean_up_tokenization_spaces": bool(getattr(tok, "clean_up_tokenization_spaces", False))}

    # ---- completions

    def completion_prompts(prompt: Any) -> list[list[int]]:
        if isinstance(prompt, str):
            prompts = [engine.encode(prompt, True)]
        elif not prompt:
            prompts = [engine.encode("", True)]
        elif isinstance(prompt[0], int):
            prompts = [list(prompt)]
        elif isinstance(prompt[0], str):
            prompts = [engine.encode(p, True) for p in prompt]
        else:
            prompts = [list(p) for p in prompt]
        start = engine.tokenizer.bos_token_id
        start = start if start is not None else (engine.eos_ids[0] if engine.eos_ids else None)
        for p in prompts:  # an empty prompt starts from BOS (OpenAI: <|endoftext|>)
            if not p:
                if start is None:
                    raise OpenAIError(400, "empty prompt", param="prompt")
                p.append(start)
        return prompts

    def completion_logprobs(lps, prompt_ids: list[int], gen_ids: list[int], echo: bool) -> dict[str, Any]:
        """OpenAI legacy logprobs for the echoed prompt (its first token: None) and/or the completion.
        `lps[t - 1]` is the entry of position t of prompt + completion."""
        full = prompt_ids + gen_ids
        first = 0 if echo else len(prompt_ids)
        tokens, token_lps, top_lps, offsets = [], [], [], []
        pos = 0
        for t in range(first, len(full)):
            tstr = engine.token_str(full[t])
            tokens.append(tstr)
            offsets.append(pos)
            pos += len(tstr)
            if t == 0:
                token_lps.append(None)
                top_lps.append(None)
                continue
            _, lp, top = lps[t - 1]
            token_lps.append(lp)
            d = {engine.token_str(i): v for i, v in top}
            d.setdefault(tstr, lp)
            top_lps.append(d)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": top_lps, "text_offset": offsets}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        adapter = resolve(body.model)
        prompts = completion_prompts(body.prompt)
        vocab = len(engine.tokenizer)
        for p in prompts:
            if any(t < 0 or t >= vocab for t in p):
                raise OpenAIError(400, f"token ids must be in [0, {vocab})", param="prompt")
        jobs = []
        for p in prompts:
            mt = check_len(len(p), body.max_tokens if body.max_tokens is not None else 16)
            params = GenParams(max_tokens=mt, temperature=body.temperature or 0.0, top_p=body.top_p or 1.0,
                               stop=_stop_list(body.stop), seed=body.seed)
            jobs.append((p, params))
        rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return _sse(stream_completions(rid, now, body, adapter, jobs), stats)
        stats.start()
        ok = False
        try:
            choices, prompt_tokens, completion_tokens = [], 0, 0
            for i, (p, params) in enumerate(jobs):
                prompt_tokens += len(p)
                for j in range(body.n):
                    seed_params = params if params.seed is None else GenParams(**{**params.__dict__,
                                                                                   "seed": params.seed + j})
                    res, lps = await run_in_threadpool(engine.generate, p, seed_params, adapter, None, None,
                                                       body.logprobs)
                    completion_tokens += len(res.token_ids)
                    prefix = engine.decode(p) if body.echo else ""
                    choice: dict[str, Any] = {"index": i * body.n + j, "text": prefix + res.text,
                                              "logprobs": None, "finish_reason": res.finish_reason}
                    if body.logprobs is not None and lps is not None:
                        choice["logprobs"] = completion_logprobs(lps, p, res.token_ids, body.echo)
                    choices.append(choice)
            ok = True
        finally:
            stats.end(ok)
        return {"id": rid, "object": "text_completion", "created": now, "model": body.model, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    async def stream_completions(rid: str, now: int, body: CompletionRequest, adapter: str | None,
                                 jobs: list[tuple[list[int], GenParams]]) -> AsyncIterator[dict[str, Any]]:
        prompt_tokens = completion_tokens = 0
        for i, (p, params) in enumerate(jobs):
            prompt_tokens += len(p)
            for j in range(body.n):
                index = i * body.n + j
                if body.echo:
                    yield {"id": rid, "object": "text_completion", "created": now, "model": body.model,
                           "choices": [{"index": index, "text": engine.decode(p), "logprobs": None,
                                        "finish_reason": None}]}
                async for kind, value in _generate_stream(engine, p, params, adapter):
                    if kind == "text":
                        yield {"id": rid, "object": "text_completion", "created": now, "model": body.model,
                               "choices": [{"index": index, "text": value, "logprobs": None, "finish_reason": None}]}
                    else:
                        completion_tokens += len(value.token_ids)
                        yield {"id": rid, "object": "text_completion", "created": now, "model": body.model,
                               "choices": [{"index": index, "text": "", "logprobs": None,
                                            "finish_reason": value.finish_reason}]}
        if (body.stream_options or {}).get("include_usage"):
            yield {"id": rid, "object": "text_completion", "created": now, "model": body.model, "choices": [],
                   "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}}

    # ---- chat

    def chat_logprobs(lps, prompt_len: int, gen_ids: list[int]) -> dict[str, Any]:
        content = []
        for tid, lp, top in lps[prompt_len - 1:prompt_len - 1 + len(gen_ids)]:
            t = engine.token_str(tid)
            content.append({"token": t, "logprob": lp, "bytes": list(t.encode()),
                            "top_logprobs": [{"token": engine.token_str(i), "logprob": v,
                                              "bytes": list(engine.token_str(i).encode())} for i, v in top]})
        return {"content": content}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        adapter = resolve(body.model)
        if not body.messages:
            raise OpenAIError(400, "`messages` must not be empty", param="messages")
        text = engine.chat_prompt(body.messages, add_generation_prompt=body.add_generation_prompt,
                                  **(body.chat_template_kwargs or {}))
        p = engine.encode(text, False)
        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        params = GenParams(max_tokens=check_len(len(p), requested), temperature=body.temperature or 0.0,
                           top_p=body.top_p or 1.0, stop=_stop_list(body.stop), seed=body.seed)
        rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        k = (body.top_logprobs or 0) if body.logprobs else None
        if body.stream:
            return _sse(stream_chat(rid, now, body, adapter, p, params), stats)
        stats.start()
        ok = False
        try:
            choices, completion_tokens = [], 0
            for j in range(body.n):
                jp = params if params.seed is None else GenParams(**{**params.__dict__, "seed": params.seed + j})
                res, lps = await run_in_threadpool(engine.generate, p, jp, adapter, None, None, k)
                completion_tokens += len(res.token_ids)
                choices.append({"index": j, "message": {"role": "assistant", "content": res.text},
                                "logprobs": chat_logprobs(lps, len(p), res.token_ids) if lps is not None else None,
                                "finish_reason": res.finish_reason})
            ok = True
        finally:
            stats.end(ok)
        return {"id": rid, "object": "chat.completion", "created": now, "model": body.model, "choices": choices,
                "usage": {"prompt_tokens": len(p), "completion_tokens": completion_tokens,
                          "total_tokens": len(p) + completion_tokens}}

    async def stream_chat(rid: str, now: int, body: ChatRequest, adapter: str | None, p: list[int],
                          params: GenParams) -> AsyncIterator[dict[str, Any]]:
        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": rid, "object": "chat.completion.chunk", "created": now, "model": body.model,
                    "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        completion_tokens = 0
        for j in range(body.n):
            jp = params if params.seed is None else GenParams(**{**params.__dict__, "seed": params.seed + j})
            yield chunk(j, {"role": "assistant", "content": ""})
            async for kind, value in _generate_stream(engine, p, jp, adapter):
                if kind == "text":
                    yield chunk(j, {"content": value})
                else:
                    completion_tokens += len(value.token_ids)
                    yield chunk(j, {}, value.finish_reason)
        if (body.stream_options or {}).get("include_usage"):
            yield {"id": rid, "object": "chat.completion.chunk", "created": now, "model": body.model, "choices": [],
                   "usage": {"prompt_tokens": len(p), "completion_tokens": completion_tokens,
                             "total_tokens": len(p) + completion_tokens}}

    return app


async def _generate_stream(engine: Engine, prompt_ids: list[int], params: GenParams,
                           adapter: str | None) -> AsyncIterator[tuple[str, Any]]:
    """("text", delta) items while generating in a worker thread, then ("done", GenResult). Leaving the
    iteration early (client gone) cancels the generation at its next token."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def on_text(delta: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("text", delta))

    async def work() -> None:
        try:
            res, _ = await run_in_threadpool(engine.generate, prompt_ids, params, adapter, on_text, cancel, None)
            # run_in_threadpool returns after the thread's call_soon_threadsafe callbacks were scheduled
            await asyncio.sleep(0)
            queue.put_nowait(("done", res))
        except BaseException as e:  # noqa: BLE001
            queue.put_nowait(("error", e))

    task = asyncio.create_task(work())
    try:
        while True:
            kind, value = await queue.get()
            if kind == "error":
                raise value
            yield kind, value
            if kind == "done":
                return
    finally:
        cancel.set()
        if not task.done():
            await asyncio.shield(task)


def _sse(events: AsyncIterator[dict[str, Any]], stats: _Stats) -> StreamingResponse:
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


# ------------------------------------------------------------------ CLI


def _parse_adapter(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected name=DIR, got {value!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m weft.serving.openai_server",
                                     description="weft's OpenAI-compatible transformers server")
    parser.add_argument("--model", required=True, type=Path, help="model folder (config, weights, tokenizer)")
    parser.add_argument("--name", required=True, help="served model name (the `model` field of requests)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--adapter", action="append", type=_parse_adapter, default=[], metavar="NAME=DIR",
                        help="a PEFT/LoRA adapter served as NAME (repeatable)")
    parser.add_argument("--default-adapter", default=None, help="adapter used when a request names --name")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.model, args.name, dict(args.adapter) or None, default_adapter=args.default_adapter,
                     device=args.device)
    log.info("serving %s (%s) on http://%s:%d", args.name, args.model, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
