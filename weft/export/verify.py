"""Check an exported model against what it was made from: load both with transformers, compare the logits over a
prompt and a short greedy continuation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel


class Verification(BaseModel):
    max_abs_logit_delta: float  # over every position of the prompt and every vocabulary entry
    argmax_equal: bool  # the same most likely next token at every position of the prompt
    greedy_equal: bool
    reference_tokens: list[int]  # the greedy continuation's new tokens
    gguf_tokens: list[int]  # the checked model's (the GGUF's, or the merged model's for verify_merge)


def verify_gguf(reference_dir: Path, gguf_file: Path, prompt: str, new_tokens: int = 8) -> Verification:
    """Compare `gguf_file` with the model in `reference_dir` on `prompt` (tokenised by the reference tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    reference_dir, gguf_file = Path(reference_dir), Path(gguf_file)
    reference = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32, device_map="cpu")
    # transformers dequantises every GGUF tensor type to the dtype asked for
    candidate = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, device_map="cpu"
    )
    return _compare(reference, candidate, reference_dir, prompt, new_tokens)


def verify_merge(base_dir: Path, adapter_dir: Path, merged_dir: Path, prompt: str, new_tokens: int = 8) -> Verification:
    """Compare the merged model in `merged_dir` with base + adapter (peft, unmerged) on `prompt`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, device_map="cpu")
    reference = PeftModel.from_pretrained(base, adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, device_map="cpu")
    return _compare(reference, merged, Path(base_dir), prompt, new_tokens)


def _compare(reference: Any, candidate: Any, tokenizer_dir: Path, prompt: str, new_tokens: int) -> Verification:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    inputs = tokenizer(prompt, return_tensors="pt")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generate = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": pad_id}
    outputs = []
    with torch.no_grad():
        for model in (reference.eval(), candidate.eval()):
            logits = model(**inputs).logits[0]
            tokens = model.generate(**inputs, **generate)[0, inputs.input_ids.shape[1] :].tolist()
            outputs.append((logits, tokens))
    (ref_logits, ref_tokens), (logits, tokens) = outputs
    return Verification(
        max_abs_logit_delta=float((ref_logits - logits).abs().max()),
        argmax_equal=bool(torch.equal(ref_logits.argmax(-1), logits.argmax(-1))),
        greedy_equal=ref_tokens == tokens,
        reference_tokens=ref_tokens,
        gguf_tokens=tokens,
    )
