"""Convert a Llama-architecture Hugging Face folder to a GGUF file that llama.cpp (and transformers) can load.

Tensors, hyperparameters and the byte-level BPE vocabulary are written the way llama.cpp's
`convert_hf_to_gguf.py` writes them for `LlamaForCausalLM` (same tensor names, q/k permutation, type rules and
numpy quantisers, so f32/f16/bf16/q8_0 tensors should match its output byte for byte). The numpy 4/5-bit
quants work but damage small models (see `DEGRADED`); K-quants need llama.cpp's `llama-quantize` on PATH,
which re-quantises an f16 GGUF written here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as F
from pydantic import BaseModel

from weft.errors import InvalidInput
from weft.export.formats import DEGRADED, K_QUANTS, NUMPY_QUANTS, QUANTIZATIONS, QUANTIZE_TOOL, unavailable

log = logging.getLogger(__name__)

# quantization name -> (tensor type of the 2-D weights, GGUF file type), for each of formats.NUMPY_QUANTS
TENSOR_TYPES: dict[str, tuple[Q, F]] = {
    "f32": (Q.F32, F.ALL_F32),
    "f16": (Q.F16, F.MOSTLY_F16),
    "bf16": (Q.BF16, F.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, F.MOSTLY_Q4_0),
    "q4_1": (Q.Q4_1, F.MOSTLY_Q4_1),
    "q5_0": (Q.Q5_0, F.MOSTLY_Q5_0),
    "q5_1": (Q.Q5_1, F.MOSTLY_Q5_1),
}
ARCHITECTURES = ("LlamaForCausalLM",)
SAFETENSORS_FLOATS = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
SKIPPED = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class ExportUnavailable(InvalidInput):
    """The export needs a tool this machine does not have (llama.cpp's `llama-quantize` for K-quants). An
    `InvalidInput` (400): the request cannot be served here as asked, and retrying will not help."""

    code = "EXPORT_UNAVAILABLE"


class GgufWritten(BaseModel):
    path: Path
    quantization: str
    size_bytes: int
    tensor_count: int


def write_gguf(hf_dir: Path, out_file: Path, quantization: str = "q8_0") -> GgufWritten:
    """Write the Llama model in `hf_dir` (config.json, *.safetensors, tokenizer.json) to `out_file` as a GGUF.

    Raises ValueError for an unknown quantization, `ExportUnavailable` for a K-quant without `llama-quantize`
    on PATH, and `InvalidInput` for a model or tokenizer this writer cannot convert."""
    hf_dir, out_file = Path(hf_dir), Path(out_file)
    name = quantization.lower()
    if name not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; supported: {', '.join(sorted(QUANTIZATIONS))}")
    if name in DEGRADED:
        log.warning("%s: %s", name, DEGRADED[name])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if name in K_QUANTS:
        return _write_k_quant(hf_dir, out_file, name)
    tmp = out_file.with_name(f".{out_file.name}.partial")
    try:
        count = _convert(hf_dir, tmp, name)
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return GgufWritten(path=out_file, quantization=name, size_bytes=out_file.stat().st_size, tensor_count=count)


def _write_k_quant(hf_dir: Path, out_file: Path, name: str) -> GgufWritten:
    tool = shutil.which(QUANTIZE_TOOL)
    if tool is None:
        raise ExportUnavailable(unavailable(name), {"quantization": name, "without_llama_quantize": list(NUMPY_QUANTS)})
    with tempfile.TemporaryDirectory(dir=out_file.parent, prefix=".gguf-") as tmp:
        f16, quantized = Path(tmp) / "model-f16.gguf", Path(tmp) / out_file.name
        _convert(hf_dir, f16, "f16")
        proc = subprocess.run([tool, str(f16), str(quantized), name.upper()], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"llama-quantize {name.upper()} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}"
            )
        os.replace(quantized, out_file)
    count = len(gguf.GGUFReader(out_file).tensors)
    return GgufWritten(path=out_file, quantization=name, size_bytes=out_file.stat().st_size, tensor_count=count)


def _convert(hf_dir: Path, out_file: Path, name: str) -> int:
    """Write the GGUF; return its tensor count."""
    hparams = _llama_hparams(hf_dir)
    qtype, ftype = TENSOR_TYPES[name]
    writer = gguf.GGUFWriter(out_file, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _add_hparams(writer, hparams, hf_dir.name, ftype)
        _add_vocab(writer, hf_dir, hparams["vocab_size"])
        count = 0
        for tensor_name, data in _tensors(hf_dir, hparams):
            encoded, tensor_type = _encode(tensor_name, data, qtype)
            writer.add_tensor(tensor_name, encoded, raw_dtype=tensor_type)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return count


def _llama_hparams(hf_dir: Path) -> dict[str, Any]:
    config_file = hf_dir / "config.json"
    if not config_file.is_file():
        raise InvalidInput(f"{hf_dir} has no config.json", {"path": str(hf_dir)})
    hparams = json.loads(config_file.read_text())
    architectures = hparams.get("architectures") or [hparams.get("model_type")]
    if architectures[0] not in ARCHITECTURES:
        raise InvalidInput(
            f"GGUF export supports {', '.join(ARCHITECTURES)} models, not {architectures[0]}",
            {"architecture": architectures[0], "supported": list(ARCHITECTURES)},
        )
    return hparams


def _rope(hparams: dict[str, Any]) -> dict[str, Any]:
    """Rope settings in one dict: transformers 5 writes `rope_parameters`, 4.x `rope_theta` + `rope_scaling`."""
    rope = dict(hparams.get("rope_parameters") or hparams.get("rope_scaling") or {})
    rope.setdefault("rope_theta", hparams.get("rope_theta", 10000.0))
    rope["rope_type"] = rope.get("rope_type") or rope.get("type") or "default"
    if rope["rope_type"] not in ("default", "linear", "llama3"):
        raise InvalidInput(
            f"rope scaling {rope['rope_type']!r} is not supported by the GGUF export (default, linear and llama3 are)",
            {"rope_type": rope["rope_type"]},
        )
    return rope


def _head_dim(hparams: dict[str, Any]) -> int:
    return hparams.get("head_dim") or hparams["hidden_size"] // hparams["num_attention_heads"]


def _add_hparams(writer: gguf.GGUFWriter, hparams: dict[str, Any], name: str, ftype: F) -> None:
    rope = _rope(hparams)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(hparams["num_hidden_layers"])
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_head_count_kv(hparams.get("num_key_value_heads") or hparams["num_attention_heads"])
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(hparams["rms_norm_eps"])
    if "head_dim" in hparams:
        writer.add_key_length(hparams["head_dim"])
        writer.add_value_length(hparams["head_dim"])
    writer.add_file_type(ftype)
    writer.add_vocab_size(hparams["vocab_size"])
    writer.add_rope_dimension_count(_head_dim(hparams))
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _tensors(hf_dir: Path, hparams: dict[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32/float16 array) of every tensor, q/k rows permuted for llama.cpp's rope layout. Read
    with gguf's own safetensors reader, so the writer needs neither torch nor transformers."""
    files = sorted(hf_dir.glob("model*.safetensors"))
    if not files:
        raise InvalidInput(f"{hf_dir} has no model*.safetensors weights", {"path": str(hf_dir)})
    n_layers, n_head = hparams["num_hidden_layers"], hparams["num_attention_heads"]
    n_kv_head = hparams.get("num_key_value_heads") or n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    if (factors := _llama3_rope_factors(hparams)) is not None:
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors
    for file in files:
        for hf_name, stored in gguf.utility.SafetensorsLocal(file).tensors.items():
            if hf_name.endswith(SKIPPED):
                continue
            new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise InvalidInput(f"{hf_name} has no GGUF name in the llama architecture", {"tensor": hf_name})
            data = _float_array(stored)
            if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                data = _permute(data, n_head)
            elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                data = _permute(data, n_kv_head)
            yield new_name, data.squeeze()


def _float_array(stored: gguf.utility.LocalTensor) -> np.ndarray:
    """f16 and f32 as stored, anything else (bf16 included) widened to f32, as llama.cpp does."""
    raw = stored.mmap_bytes()
    if stored.dtype == "BF16":  # bf16 is the top half of an f32
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(stored.shape)
    if stored.dtype not in SAFETENSORS_FLOATS:
        raise InvalidInput(f"tensors of type {stored.dtype} cannot be exported to GGUF", {"dtype": stored.dtype})
    data = raw.view(SAFETENSORS_FLOATS[stored.dtype]).reshape(stored.shape)
    return data if data.dtype in (np.float16, np.float32) else data.astype(np.float32)


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rope rotates adjacent pairs where transformers rotates halves: interleave each head's rows."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _llama3_rope_factors(hparams: dict[str, Any]) -> np.ndarray | None:
    """Llama 3.1+ rope scaling as the per-frequency divisors llama.cpp reads from `rope_freqs.weight`."""
    rope = _rope(hparams)
    if rope["rope_type"] != "llama3":
        return None
    dim, base = _head_dim(hparams), rope["rope_theta"]
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _encode(name: str, data: np.ndarray, qtype: Q) -> tuple[np.ndarray, Q]:
    """(bytes or floats, type) of one tensor under llama.cpp's rules: 1-D tensors, norms and non-weights stay
    f32; a row length that is not a multiple of the quant block falls back to f16."""
    if data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        qtype = Q.F32
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError as exc:
        log.info("%s: %s, falling back to F16", name, exc)
        return gguf.quants.quantize(data, Q.F16), Q.F16


def _add_vocab(writer: gguf.GGUFWriter, hf_dir: Path, vocab_size: int) -> None:
    """The tokenizer as llama.cpp's "gpt2" (byte-level BPE) model: tokens, types, merges, special ids, template."""
    tokenizer_file = hf_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise InvalidInput(
            f"{hf_dir} has no tokenizer.json (GGUF export needs a byte-level BPE tokenizer)", {"path": str(hf_dir)}
        )
    spec = json.loads(tokenizer_file.read_text())
    if spec.get("model", {}).get("type") != "BPE" or spec["model"].get("byte_fallback"):
        raise InvalidInput(
            "GGUF export supports byte-level BPE tokenizers only, not SentencePiece-style ones",
            {"tokenizer": spec.get("model", {}).get("type")},
        )
    tokens, types = _tokens(hf_dir, spec, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(spec.get("pre_tokenizer") or {}))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(hf_dir, load_merges=True).add_to_gguf(writer)


def _pre_tokenizer(pre: dict[str, Any]) -> str:
    """llama.cpp's name for the text-splitting rules. llama.cpp hashes the tokens of a probe text, which only
    recognises known vocabularies; this reads the same rules from tokenizer.json, so a retrained vocabulary with
    a known splitter (the tiny test model's) converts too."""
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if (
        kinds == ["Split", "ByteLevel"]
        and steps[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT
        and not steps[1].get("use_regex", True)
    ):
        return "llama-bpe"
    raise InvalidInput(
        "the tokenizer's pre-tokenizer is not one GGUF export knows (GPT-2, SmolLM, Llama 3)", {"pre_tokenizer": pre}
    )


def _tokens(hf_dir: Path, spec: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token and llama.cpp token type; ids the tokenizer lacks become unused `[PADi]` entries."""
    from tokenizers import Tokenizer

    added = {entry["id"]: entry for entry in spec.get("added_tokens", [])}
    by_id = {i: token for token, i in spec["model"]["vocab"].items()} | {i: e["content"] for i, e in added.items()}
    if max(by_id) >= vocab_size:
        raise InvalidInput(
            f"the tokenizer has ids past the model's vocab_size {vocab_size}",
            {"vocab_size": vocab_size, "max_token_id": max(by_id)},
        )
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        if i in added:
            if not added[i].get("normalized", True):  # llama.cpp expects control/user tokens pre-normalised
                token = tokenizer.decode(
                    tokenizer.encode(token, add_special_tokens=False).ids, skip_special_tokens=False
                )
            if added[i].get("special") or _looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _looks_special(token: str) -> bool:
    """Added tokens some tokenizers forget to mark special (llama.cpp's list)."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )
