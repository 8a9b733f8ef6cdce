"""The evaluation's markdown artifact, and why an adapter can have no effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weft.evaluation.scoring import Gate, Outcome


def zero_adapter_reason(adapter_dir: Path) -> str | None:
    """'all lora_B weights are zero' when that is so (a LoRA that was never trained changes nothing)."""
    from safetensors.torch import load_file

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.exists():
        return f"no adapter_model.safetensors in {adapter_dir.name}"
    tensors = load_file(str(weights))
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    if lora_b and all(not t.any() for t in lora_b):
        return f"all {len(lora_b)} lora_B weight matrices are zero (an untrained LoRA)"
    return None


def markdown(model: str, base: str, outcome: Outcome, benchmarks: list[dict[str, Any]], gate: Gate) -> str:
    r = outcome.results
    ci = r["improvement"]["confidence_interval"]
    keys = [k for k in ("accuracy", "f1_score", "precision", "recall", "exact_match", "rouge_l", "avg_response_time_ms")
            if k in r["base_model"]]
    table = "\n".join(f"| {k} | {r['base_model'][k]:.4g} | {r['fine_tuned'][k]:.4g} | "
                      f"{r['improvement'].get(k + '_delta', '')} |" for k in keys)
    bench = "\n".join(f"| {b['task']} | {b['metric']} | {b['base']:.4g} | {b['tuned']:.4g} | {b['delta']:+.4g} |"
                      for b in benchmarks) or "| (none run) | | | | |"
    sample = "\n".join(f"| {e['input'][:60]!r} | {e['expected'][:30]!r} | {e['base_model_output'][:30]!r} | "
                       f"{e['fine_tuned_output'][:30]!r} | {e['winner']} |" for e in outcome.examples[:10])
    return (f"# {model} vs {base}\n\n**{'Promoted' if gate.promoted else 'Not promoted'}**: {gate.reason}\n\n"
            f"{r['examples_count']} examples ({r['task']}); accuracy change {ci['mean']:+.3f}, "
            f"{ci['confidence']:.0%} CI [{ci['low']:+.3f}, {ci['high']:+.3f}] (paired bootstrap, "
            f"{ci['resamples']} resamples)\n\n| metric | base | fine-tuned | change |\n|---|---|---|---|\n{table}\n\n"
            f"## Benchmarks (lm-eval)\n\n| task | metric | base | fine-tuned | delta |\n|---|---|---|---|---|\n{bench}\n\n"
            f"## Examples\n\n| input | expected | base | fine-tuned | winner |\n|---|---|---|---|---|\n{sample}\n")
