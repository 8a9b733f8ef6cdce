"""The generation engine: one causal LM (plus PEFT/LoRA adapters) on transformers, one `generate` at a time.

Model calls run in a worker thread under `Engine.lock`; `generate_stream` bridges one generation to asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from weft.serving.server.errors import OpenAIError
from weft.serving.server.stops import cut_at_stop, held_back

# for each position of prompt + completion after the first: (token id, its logprob, top-k [(id, logprob)])
PositionLogprobs = list[tuple[int, float, list[tuple[int, float]]]]


@dataclass
class GenParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None = None

    def for_choice(self, j: int) -> GenParams:
        """The parameters of the j-th choice of a request: a given seed moves on by `j` so choices differ."""
        return self if self.seed is None else replace(self, seed=self.seed + j)


@dataclass
class GenResult:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length"


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

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_str(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def check_token_ids(self, ids: list[int], param: str) -> None:
        """400 unless every id is in the vocabulary."""
        if any(t < 0 or t >= self.vocab_size for t in ids):
            raise OpenAIError(400, f"token ids must be in [0, {self.vocab_size})", param=param)

    def chat_prompt(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                    **kwargs: Any) -> str:
        """The prompt text of a chat; 400 when the model has no chat template."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise OpenAIError(400, "the model has no chat template; use /v1/completions")
        return self.tokenizer.apply_chat_template(flatten_messages(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def completion_prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        """The token ids of each prompt of a completion request's `prompt` (text, texts, ids or lists of ids)."""
        if isinstance(prompt, str):
            prompts = [self.encode(prompt, True)]
        elif not prompt:
            prompts = [self.encode("", True)]
        elif isinstance(prompt[0], int):
            prompts = [list(prompt)]
        elif isinstance(prompt[0], str):
            prompts = [self.encode(p, True) for p in prompt]
        else:
            prompts = [list(p) for p in prompt]
        start = self.tokenizer.bos_token_id
        start = start if start is not None else (self.eos_ids[0] if self.eos_ids else None)
        for p in prompts:  # an empty prompt starts from BOS (OpenAI: <|endoftext|>)
            if not p:
                if start is None:
                    raise OpenAIError(400, "empty prompt", param="prompt")
                p.append(start)
        return prompts

    def max_new_tokens(self, prompt_len: int, requested: int | None) -> int:
        """`requested` (None: all) clamped to the context left after the prompt; 400 when nothing is left."""
        room = self.max_model_len - prompt_len
        if room < 0 or (room == 0 and (requested or 0) > 0):
            raise OpenAIError(400, f"This model's maximum context length is {self.max_model_len} tokens; "
                                   f"the prompt has {prompt_len} tokens.", param="prompt")
        return room if requested is None else min(requested, room)

    # ---- model calls (worker thread)

    def _select(self, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
        """A context manager that activates `adapter` (None = the base model)."""
        if not self.adapters:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def generate(self, prompt_ids: list[int], params: GenParams, adapter: str | None,
                 on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
                 logprobs: int | None = None) -> tuple[GenResult, PositionLogprobs | None]:
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
                text, hit = cut_at_stop(text, params.stop)
                if hit:
                    finish = "stop"
                elif gen_ids and gen_ids[-1] in self.eos_ids:
                    finish = "stop"
                lps = None
                if logprobs is not None:
                    with torch.inference_mode():
                        lps = self._logprobs_locked(prompt_ids + gen_ids, logprobs)
        return GenResult(token_ids=gen_ids, text=text, finish_reason=finish), lps

    def _generate_locked(self, prompt_ids: list[int], params: GenParams, on_text: Callable[[str], None] | None,
                         cancel: threading.Event | None) -> tuple[list[int], str]:
        torch = self.torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        n_prompt = len(prompt_ids)
        engine = self
        state = {"sent": 0, "stopped": False}

        class _Watch(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                new = input_ids[0, n_prompt:].tolist()
                done = False
                if params.stop or on_text is not None:
                    text = engine.decode(new)
                    cut, hit = cut_at_stop(text, params.stop)
                    if hit:
                        state["stopped"] = done = True
                        safe = cut
                    elif new and new[-1] in engine.eos_ids:
                        safe = text
                    else:
                        safe = text[: len(text) - held_back(text, params.stop)]
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
            text, _ = cut_at_stop(self.decode(gen_ids), params.stop)
            if len(text) > state["sent"]:
                on_text(text[state["sent"]:])
        return gen_ids, ("stop" if state["stopped"] else "length")

    def _logprobs_locked(self, ids: list[int], k: int) -> PositionLogprobs:
        torch = self.torch
        if len(ids) < 2:
            return []
        t = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits = self.model(input_ids=t, attention_mask=torch.ones_like(t)).logits[0, :-1].float()
        lp = torch.log_softmax(logits, dim=-1)
        target = t[0, 1:]
        chosen = lp.gather(1, target[:, None])[:, 0].tolist()
        out: PositionLogprobs = []
        if k > 0:
            top_v, top_i = lp.topk(k, dim=-1)
            tops = [list(zip(i_row, v_row)) for i_row, v_row in zip(top_i.tolist(), top_v.tolist())]
        else:
            tops = [[] for _ in chosen]
        for tok, val, top in zip(target.tolist(), chosen, tops):
            out.append((tok, float(val), [(int(i), float(v)) for i, v in top]))
        return out


def flatten_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text-only content parts joined into one string (what text chat templates expect)."""
    out = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), list):
            m["content"] = "".join(p.get("text", "") for p in m["content"] if isinstance(p, dict)
                                   and p.get("type", "text") == "text")
        out.append(m)
    return out


async def generate_stream(engine: Engine, prompt_ids: list[int], params: GenParams,
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
        except BaseException as e:
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
