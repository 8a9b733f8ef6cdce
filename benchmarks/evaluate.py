"""Examples/s of weft's base-vs-fine-tuned comparison against calling `generate` directly, in one run.

Both sides answer the same prompts with the same chat template and greedy decoding, for the base
model and for base + adapter. weft's side is `weft.evaluation.generation.base_and_tuned` (one copy of
the weights, adapter switched off for the base) followed by scoring (exact match, ROUGE-L, F1,
bootstrap interval); the baseline loads base and base + adapter and calls `model.generate` in a loop.

Usage: .venv/bin/python benchmarks/evaluate.py [--model DIR] [--examples 48] [--max-new-tokens 16]
(default model: the tests' tiny Llama, built in a temporary folder)
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def random_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA with random (non-zero) B matrices, so the fine-tuned answers differ from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    return out


def plain_generate(model_dir: Path, adapter_dir: Path, prompts: list[list[dict]], max_new_tokens: int) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    start = time.perf_counter()
    for model in (AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                  PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                            str(adapter_dir))):
        model.eval()
        with torch.inference_mode():
            for messages in prompts:
                ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
                out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
                tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return time.perf_counter() - start


def weft_compare(model_dir: Path, adapter_dir: Path, examples: list, max_new_tokens: int) -> float:
    from weft.evaluation import scoring
    from weft.evaluation.generation import Decoding, base_and_tuned

    start = time.perf_counter()
    base, tuned = base_and_tuned(model_dir, adapter_dir, None, examples, Decoding(max_new_tokens=max_new_tokens))
    scoring.score(examples, base, tuned)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch

    from weft.training.records import Example

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from weft.testing.tiny_model import build_tiny_model

            model_dir = build_tiny_model(Path(tmp) / "tiny")
        else:
            model_dir = args.model
        adapter_dir = random_adapter(model_dir, Path(tmp) / "adapter")
        examples = [Example(messages=[{"role": "user", "content": f"What is the service code for job {i}?"}],
                            expected=f"SC-{i % 7}") for i in range(args.examples)]
        prompts = [e.messages for e in examples]
        plain, ours = [], []
        for _ in range(args.rounds):  # alternate so warm-up and caches favour neither side
            plain.append(plain_generate(model_dir, adapter_dir, prompts, args.max_new_tokens))
            ours.append(weft_compare(model_dir, adapter_dir, examples, args.max_new_tokens))
    n = 2 * args.examples  # answers per side: base and fine-tuned
    best_plain, best_ours = min(plain), min(ours)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}")
    print(f"model: {model_dir.name}, {args.examples} examples x 2 models, max_new_tokens={args.max_new_tokens}")
    print(f"plain generate loop (load both, generate): {n / best_plain:8.1f} answers/s  ({best_plain:.2f} s)")
    print(f"weft comparison (answers + scoring):       {n / best_ours:8.1f} answers/s  ({best_ours:.2f} s)")
    print(f"weft / plain time: {best_ours / best_plain:.2f}x")


if __name__ == "__main__":
    main()
