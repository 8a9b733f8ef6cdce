"""GPU-memory estimates to serve and fine-tune a model, from its metadata alone.

    weights(bits)      = parameters * bits / 8
    kv_cache           = 2 (K and V) * layers * context * kv_heads * head_dim * 2 bytes (fp16), one sequence
    serve(bits)        = (weights(bits) + kv_cache) * 1.10   (runtime overhead: CUDA context, buffers)
    lora_params        = layers * 4 projections (q, k, v, o) * rank * 2 * hidden      (rank 16)
    adapter_state      = lora_params * 16 bytes  (fp32 weight + grad + two Adam moments)
    activations        = layers * seq * hidden * (34 + 5 * heads * seq / hidden) * 1 byte-unit
                         (Korthikanti et al. 2022, batch 1, fp16, no recomputation; seq = min(context, 2048))
    train_lora         = (weights(16) + adapter_state + activations) * 1.10
    train_qlora        = (weights(4)  + adapter_state + activations) * 1.10
When layers/hidden/heads are unknown the KV-cache and activation terms are 0 (the estimate says so).
"""

from __future__ import annotations

from pydantic import BaseModel

GIB = 1024**3
OVERHEAD = 1.10
LORA_RANK = 16
TRAIN_SEQ = 2048


class HardwareEstimate(BaseModel):
    parameters: int
    serve_fp16_gib: float
    serve_int8_gib: float
    serve_int4_gib: float
    train_lora_gib: float
    train_qlora_gib: float
    kv_cache_gib: float
    lora_trainable_parameters: int
    context_length: int | None
    complete: bool  # False when the architecture numbers were missing and some terms are 0


def weights_bytes(parameters: int, bits: int) -> float:
    return parameters * bits / 8


def kv_cache_bytes(layers: int, context: int, hidden: int, heads: int, kv_heads: int | None) -> float:
    head_dim = hidden / heads
    return 2 * layers * context * (kv_heads or heads) * head_dim * 2


def lora_parameters(layers: int, hidden: int, rank: int = LORA_RANK) -> int:
    return layers * 4 * rank * 2 * hidden


def activation_bytes(layers: int, seq: int, hidden: int, heads: int) -> float:
    return layers * seq * hidden * (34 + 5 * heads * seq / hidden)


def estimate(parameters: int, *, num_layers: int | None, hidden_size: int | None, num_attention_heads: int | None,
             num_key_value_heads: int | None = None, context_length: int | None = None) -> HardwareEstimate:
    """The memory needed to serve (fp16/int8/int4) and to train (LoRA/QLoRA) one model, in GiB."""
    complete = bool(num_layers and hidden_size and num_attention_heads and context_length)
    if complete:
        kv = kv_cache_bytes(num_layers, context_length, hidden_size, num_attention_heads, num_key_value_heads)
        lora = lora_parameters(num_layers, hidden_size)
        act = activation_bytes(num_layers, min(context_length, TRAIN_SEQ), hidden_size, num_attention_heads)
    else:
        kv, lora, act = 0.0, 0, 0.0
    serve = lambda bits: round((weights_bytes(parameters, bits) + kv) * OVERHEAD / GIB, 3)  # noqa: E731
    train = lambda bits: round((weights_bytes(parameters, bits) + lora * 16 + act) * OVERHEAD / GIB, 3)  # noqa: E731
    return HardwareEstimate(
        parameters=parameters, serve_fp16_gib=serve(16), serve_int8_gib=serve(8), serve_int4_gib=serve(4),
        train_lora_gib=train(16), train_qlora_gib=train(4), kv_cache_gib=round(kv / GIB, 3),
        lora_trainable_parameters=lora, context_length=context_length, complete=complete,
    )


def human_size(parameters: int) -> str:
    """135000000 -> '135M', 7241732096 -> '7.2B'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            value = parameters / scale
            return f"{value:.0f}{unit}" if value >= 100 or value == int(value) else f"{value:.1f}{unit}"
    return str(parameters)
