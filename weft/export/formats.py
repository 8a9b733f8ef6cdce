"""The GGUF quantizations weft can write, by name (importable without numpy or gguf: the API checks requests
with it)."""

from __future__ import annotations

import shutil

QUANTIZE_TOOL = "llama-quantize"  # llama.cpp's tool, the only writer of K-quants
NUMPY_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")  # written by the gguf package
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
QUANTIZATIONS = NUMPY_QUANTS + K_QUANTS
_DAMAGE = ("every weight, embeddings and output included, at {} bits in blocks of 32 (llama-quantize keeps "
           "those at higher precision); Q4_0 took SmolLM2-135M's max |Δlogit| to 16.5 and broke its answers")
DEGRADED = {name: _DAMAGE.format(bits) for name, bits in (("q4_0", "4.5"), ("q4_1", "5"), ("q5_0", "5.5"),
                                                           ("q5_1", "6"))}


def unavailable(quantization: str) -> str | None:
    """Why this machine cannot write `quantization` (a K-quant without llama-quantize on PATH), else None."""
    if quantization not in K_QUANTS or shutil.which(QUANTIZE_TOOL):
        return None
    return (f"{quantization} is a K-quant, which needs llama.cpp's `{QUANTIZE_TOOL}` on the PATH of the worker: "
            f"install llama.cpp (e.g. `brew install llama.cpp`, or build it and put {QUANTIZE_TOOL} on PATH), or "
            "export q8_0 or f16")
