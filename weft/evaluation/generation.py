"""Answers of the base and the fine-tuned model to the same prompts: same chat template, same greedy
decoding, one prompt at a time so each answer's latency is its own."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from weft.training.records import Example


class Answers(BaseModel):
    outputs: list[str]
    times_ms: list[float]


class Decoding(BaseModel):
    max_new_tokens: int = 64
    # greedy: the comparison must not depend on sampling luck


def load(model_dir: Path, adapter_dir: Path | None) -> tuple[Any, Any]:
    """The model (base + adapter when given) and its tokenizer, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir if adapter_dir and (adapter_dir / "tokenizer_config.json").exists()
                                              else model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def answer(model: Any, tokenizer: Any, examples: list[Example], decoding: Decoding,
           disable_adapter: bool = False) -> Answers:
    """Greedy answers to each example's prompt (with `disable_adapter`, a PeftModel answers as its base)."""
    import torch

    outputs, times = [], []
    context = model.disable_adapter() if disable_adapter else nullcontext()
    with torch.inference_mode(), context:
        for example in examples:
            ids = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True).to(model.device)
            start = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=decoding.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            times.append((time.perf_counter() - start) * 1000)
            outputs.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return Answers(outputs=outputs, times_ms=times)


def base_and_tuned(base_dir: Path, adapter_dir: Path | None, tuned_dir: Path | None, examples: list[Example],
                   decoding: Decoding) -> tuple[Answers, Answers]:
    """Answers of the base model and of the fine-tuned one: base + adapter (one copy of the weights,
    the adapter switched off for the base's answers) or a separate full model."""
    if adapter_dir is not None:
        model, tokenizer = load(base_dir, adapter_dir)
        return answer(model, tokenizer, examples, decoding, disable_adapter=True), answer(model, tokenizer, examples, decoding)
    base = answer(*load(base_dir, None), examples, decoding)
    return base, answer(*load(tuned_dir, None), examples, decoding)
