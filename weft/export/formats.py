"""The GGUF quantizations weft can write, by name (importable without numpy or gguf: the API checks requests
with it)."""

from __future__ import annotations

import shutil

QUANTIZE_TOOL = "llama-quantize"  # llama.cpp's tool, the only writer of K-quants
NUMPY_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")  # written by the gguf package
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
QUANTIZATIONS = NUMPY_QUANTS + K_QUANTS
# numpy quantises every 2-D weight alike, the output matrix included (llama-quantize gives that one Q6_K).
# Max |Δlogit| measured on SmolLM2-135M against its fp32 weights over a 10-token prompt; q8_0 gave 0.75.
_DAMAGE = "changes small models' answers: SmolLM2-135M's greedy tokens differ, max |Δlogit| {} (q8_0: 0.75)"
DEGRADED = {name: _DAMAGE.format(delta) for name, delta in (("q4_0", 10.4), ("q4_1", 4.9), ("q5_0", 5.7),
                                                             ("q5_1", 8.6))}

def unavailable(quantization: str) -> str | None:
    """Why this machine cannot write `quantization` (a K-quant without llama-quantize on PATH), else None."""
    if quantization not in K_QUANTS or shutil.which(QUANTIZE_TOOL):
        return None
    return (f"{quantization} is a K-quant, which needs llama.cpp's `{QUANTIZE_TOOL}` on the PATH of the worker: "
            f"install llama.cpp (e.g. `brew install llama.cpp`, or build it and put {QUANTIZE_TOOL} on PATH), or "
            "export q8_0 or f16")
