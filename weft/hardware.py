"""GPU-memory estimates to serve and fine-tune a model, from its metadata alone (pure functions).

All sizes are bytes, reported in GB (1 GB = 10^9 bytes). With P parameters, L layers, hidden size
h, a attention heads, kv key/value heads (= a without GQA), head_dim = h / a, kv_dim = kv * head_dim:

    weights(bits)  = P * bits / 8
    kv_cache       = 2 (K and V) * L * context * kv_dim * 2 bytes (fp16), one sequence at full context
    serve(bits)    = (weights(bits) + kv_cache) * 1.10                  (10% runtime overhead)
    lora_params    = L * r * ((h + h) + 2 * (h + kv_dim) + (h + h))     (r = 16 on q, k, v, o)
    adapter_state  = lora_params * 16 bytes (fp32 weight + gradient + two Adam moments)
    activations    = seq * h * (2 * L + 34 + 5 * a * seq / h) bytes     (batch 1, fp16, gradient
                     checkpointing: each layer keeps its fp16 input, one layer at a time holds its full
                     activations (Korthikanti et al. 2022); seq = min(context, 2048))
    train_lora     = (weights(16) + adapter_state + activations) * 1.10
    train_qlora    = (weights(4)  + adapter_state + activations) * 1.10

Terms whose architecture numbers are unknown count as 0 and `complete` is False.
"""

from __future__ import annotations

from pydantic import BaseModel

GB = 1e9
OVERHEAD = 1.10
LORA_RANK = 16
TRAIN_SEQ = 2048
ADAM_BYTES_PER_PARAM = 16


class HardwareEstimate(BaseModel):
    """GPU memory (GB) to serve and to fine-tune one model."""

    parameters: int
    serve_fp16_gb: float
    serve_int8_gb: float
    serve_int4_gb: float
    train_lora_gb: float
    train_qlora_gb: float
    kv_cache_gb: float
    activations_gb: float
    lora_rank: int = LORA_RANK
    lora_trainable_parameters: int
    context_length: int | None
    complete: bool


def weights_bytes(parameters: int, bits: int) -> float:
    return parameters * bits / 8


def kv_dim(hidden: int, heads: int, kv_heads: int | None) -> float:
    return (kv_heads or heads) * hidden / heads


def kv_cache_bytes(layers: int, context: int, hidden: int, heads: int, kv_heads: int | None) -> float:
    return 2 * layers * context * kv_dim(hidden, heads, kv_heads) * 2


def lora_parameters(layers: int, hidden: int, kv: float, rank: int = LORA_RANK) -> int:
    return int(layers * rank * (2 * hidden + 2 * (hidden + kv) + 2 * hidden))


def activation_bytes(layers: int, seq: int, hidden: int, heads: int) -> float:
    return seq * hidden * (2 * layers + 34 + 5 * heads * seq / hidden)


def estimate(parameters: int, *, num_layers: int | None, hidden_size: int | None,
             num_attention_heads: int | None, num_key_value_heads: int | None = None,
             context_length: int | None = None) -> HardwareEstimate:
    """The memory needed to serve (fp16/int8/int4) and to train (LoRA/QLoRA) one model."""
    arch = bool(num_layers and hidden_size and num_attention_heads)
    kv = kv_cache_bytes(num_layers, context_length, hidden_size, num_attention_heads, num_key_value_heads) \
        if arch and context_length else 0.0
    lora = lora_parameters(num_layers, hidden_size, kv_dim(hidden_size, num_attention_heads, num_key_value_heads)) \
        if arch else 0
    seq = min(context_length or TRAIN_SEQ, TRAIN_SEQ)
    act = activation_bytes(num_layers, seq, hidden_size, num_attention_heads) if arch else 0.0

    def serve(bits: int) -> float:
        return gb((weights_bytes(parameters, bits) + kv) * OVERHEAD)

    def train(bits: int) -> float:
        return gb((weights_bytes(parameters, bits) + lora * ADAM_BYTES_PER_PARAM + act) * OVERHEAD)

    return HardwareEstimate(
        parameters=parameters, serve_fp16_gb=serve(16), serve_int8_gb=serve(8), serve_int4_gb=serve(4),
        train_lora_gb=train(16), train_qlora_gb=train(4), kv_cache_gb=gb(kv), activations_gb=gb(act),
        lora_trainable_parameters=lora, context_length=context_length, complete=arch and bool(context_length),
    )


def gb(nbytes: float) -> float:
    return round(nbytes / GB, 6)


def human_size(parameters: int) -> str:
    """134515008 -> '135M', 7241732096 -> '7.2B', 1000000 -> '1M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            value = parameters / scale
            text = f"{value:.0f}" if value >= 100 else f"{value:.1f}".removesuffix(".0")
            return f"{text}{unit}"
    return str(parameters)


def human_bytes(nbytes: float) -> str:
    """2_500_000 -> '2.5 MB' (decimal units, for logs)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"
