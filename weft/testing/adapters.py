"""A real peft adapter of a local model, built in a second (tests and benchmarks)."""

from __future__ import annotations

from pathlib import Path


def build_adapter(base_dir: Path, out: Path, *, dora: bool = False, rank: int = 4, seed: int = 0) -> Path:
    """A LoRA (or DoRA) adapter on q_proj/v_proj, alpha 2 x rank, whose B matrices are non-zero so it changes the
    logits; saved with peft's `save_pretrained` to `out` (adapter_config.json + adapter_model.safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], use_dora=dora,
                        task_type="CAUSAL_LM")
    torch.manual_seed(seed)  # before lora_A's random init too: the same adapter whatever ran before
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_().mul_(0.5)
    model.save_pretrained(out)
    return Path(out)
