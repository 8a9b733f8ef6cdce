"""Fold a peft adapter (LoRA or DoRA) into its base model and save a self-contained Hugging Face folder."""

from __future__ import annotations

from pathlib import Path


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Load `base_dir` in fp32 on the CPU, apply the adapter in `adapter_dir`, merge it into the weights and save
    the merged model (safetensors) with the base's tokenizer to `out_dir`; return `out_dir`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, device_map="cpu")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)  # transformers 5 always writes safetensors (safe_serialization= is gone)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return out_dir
