"""The generation engine: one causal LM (plus PEFT/LoRA adapters) on transformers, its tokenizer, and the
`Batcher` whose thread makes every model call (concurrent requests are decoded together).
`generate_stream` bridges one generation to asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from weft.serving.server.batching import Batcher, Sequence
from weft.serving.server.errors import OpenAIError
from weft.serving.server.types import DEFAULT_MAX_BATCH, GenParams, GenResult, PositionLogprobs


class Engine:
    """The model, tokenizer and adapters; every model call happens in the batcher's thread."""

    def __init__(self, model_dir: Path, adapters: dict[str, Path] | None = None, device: str | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
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
        if adapters:
            from peft import PeftModel

            for i, (name, path) in enumerate(adapters.items()):
                if i == 0:
                    model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
                else:
                    model.load_adapter(str(path), adapter_name=name)
        self.model = model.to(self.device).eval()
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
        dora = any(getattr(cfg, "use_dora", False) for cfg in getattr(self.model, "peft_config", {}).values())
        self.batcher = Batcher(self.model, self.eos_ids, self.pad_id, self.decode, max_batch,
                               mixed_adapters=not dora, device=self.device)

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

    # ---- generation (the batcher's thread)

    def submit(self, prompt_ids: list[int], params: GenParams, adapter: str | None,
               on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
               logprobs: int | None = None) -> asyncio.Future[tuple[GenResult, PositionLogprobs | None]]:
        """Queue a continuation of `prompt_ids`; await the result. `on_text` receives text deltas that are
        safe to show (stop strings held back), called from the batcher's thread. With `logprobs` (k), the
        result also has, for each position of prompt+completion after the first: (token id, its logprob,
        top-k [(id, logprob)])."""
        seq = Sequence(prompt_ids, params, adapter, logprobs=logprobs, on_text=on_text, cancel=cancel)
        return asyncio.wrap_future(self.batcher.submit(seq))

    async def load_adapter(self, name: str, path: Path) -> None:
        """Add a LoRA adapter at run time (between two batch steps); 400 when it cannot share a batch."""
        def load() -> None:
            from peft import PeftConfig, PeftModel

            if getattr(PeftConfig.from_pretrained(str(path)), "use_dora", False):
                raise OpenAIError(400, "DoRA adapters cannot share a batch with others: serve it on a replica of "
                                       "its own (--adapter)", param="lora_path")
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name).to(self.device).eval()
                self.batcher.model, self.batcher.has_adapters = self.model, True

        await asyncio.wrap_future(self.batcher.between_steps(load))

    async def unload_adapter(self, name: str) -> None:
        """Remove an adapter once no sequence of it is queued or decoding (callers stop sending it first)."""
        while any(s.adapter == name for s in [*self.batcher.running, *self.batcher.waiting]):
            await asyncio.sleep(0.05)

        await asyncio.wrap_future(self.batcher.between_steps(lambda: self.model.delete_adapter(name)))

    def close(self) -> None:
        self.batcher.close()


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
    """("text", delta) items while generating, then ("done", GenResult). Leaving the iteration early
    (client gone) cancels the generation at its next token."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    cancel = threading.Event()

    def on_text(delta: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("text", delta))

    done = engine.submit(prompt_ids, params, adapter, on_text, cancel)
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            getter.cancel()
            await asyncio.sleep(0)  # the thread's last call_soon_threadsafe deltas run before the result
            while not queue.empty():
                yield queue.get_nowait()
            yield "done", done.result()[0]
            return
    finally:
        cancel.set()
