"""What a model folder (or a single GGUF file) says about itself, read without loading weights."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx",
                "max_sequence_length")
SAFETENSORS_DTYPE = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                     "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
                     "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
GGUF_FLOATS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


class ModelMetadataError(ValueError):
    """The folder is not a model weft can read."""


class ModelMetadata(BaseModel):
    architecture: str | None
    model_type: str | None
    parameter_count: int
    context_length: int | None
    dtype: str | None
    num_layers: int | None
    hidden_size: int | None
    num_attention_heads: int | None
    num_key_value_heads: int | None
    vocab_size: int | None
    size_bytes: int
    license: str | None
    has_chat_template: bool
    format: str  # safetensors | pytorch | gguf
    quantization: str | None = None
    files: list[str]


def extract_metadata(path: Path) -> ModelMetadata:
    """Metadata of a Hugging Face folder (config.json + safetensors/bin) or a `.gguf` file/folder."""
    path = Path(path)
    if not path.exists():
        raise ModelMetadataError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelMetadataError(f"{path} is a file but not a .gguf model")
        return _from_gguf(path, root=path)
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
    if has_weights:
        return _from_hf_folder(path)
    if ggufs := sorted(path.glob("*.gguf")):
        return _from_gguf(ggufs[0], root=path)
    what = "a config.json but no" if (path / "config.json").exists() else "no config.json and no"
    raise ModelMetadataError(f"{path} has {what} model weights (*.safetensors, pytorch_model*.bin or *.gguf)")


def _files(root: Path) -> tuple[list[str], int]:
    if root.is_file():
        return [root.name], root.stat().st_size
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [p.relative_to(root).as_posix() for p in files], sum(p.stat().st_size for p in files)


def _from_hf_folder(root: Path) -> ModelMetadata:
    config_file = root / "config.json"
    config: dict[str, Any] = json.loads(config_file.read_text()) if config_file.exists() else {}
    text = config.get("text_config") or {}

    def get(*keys: str) -> Any:
        return next((c[k] for k in keys for c in (config, text) if c.get(k) is not None), None)

    params, dtype, fmt = _count_safetensors(root)
    if params == 0:
        params, dtype, fmt = _count_torch_bin(root)
    files, size = _files(root)
    quant = (config.get("quantization_config") or {}).get("quant_method")
    config_dtype = config.get("dtype") or config.get("torch_dtype") or text.get("dtype") or text.get("torch_dtype")
    return ModelMetadata(
        architecture=(config.get("architectures") or [None])[0], model_type=config.get("model_type"),
        parameter_count=params, context_length=get(*CONTEXT_KEYS), dtype=config_dtype or dtype,
        num_layers=get("num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=get("hidden_size", "n_embd", "d_model"),
        num_attention_heads=get("num_attention_heads", "n_head"), num_key_value_heads=get("num_key_value_heads"),
        vocab_size=get("vocab_size"), size_bytes=size, license=_card_license(root),
        has_chat_template=_has_chat_template(root), format=fmt, quantization=quant, files=files,
    )


def _count_safetensors(root: Path) -> tuple[int, str | None, str]:
    """Exact parameter count from the safetensors headers (no tensor is loaded)."""
    from safetensors import safe_open

    total, dtypes = 0, Counter()
    for file in sorted(root.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                numel = 1
                for dim in sl.get_shape():
                    numel *= dim
                total += numel
                dtypes[sl.get_dtype()] += numel
    top = dtypes.most_common(1)[0][0] if dtypes else None
    return total, SAFETENSORS_DTYPE.get(top, top), "safetensors"


def _count_torch_bin(root: Path) -> tuple[int, str | None, str]:
    """Fallback for pytorch_model*.bin: `torch.load(weights_only=True)` on the meta device."""
    import torch

    total, dtypes = 0, Counter()
    for file in sorted(root.glob("pytorch_model*.bin")):
        state = torch.load(file, map_location="meta", weights_only=True)
        for tensor in state.values():
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel()
                dtypes[str(tensor.dtype).removeprefix("torch.")] += tensor.numel()
    return total, (dtypes.most_common(1)[0][0] if dtypes else None), "pytorch"


def _card_license(root: Path) -> str | None:
    readme = root / "README.md"
    if not readme.exists():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme).data.license
    except (ValueError, OSError):  # a README without valid card metadata
        return None


def _has_chat_template(root: Path) -> bool:
    if (root / "chat_template.jinja").exists() or (root / "chat_template.json").exists():
        return True
    tok_config = root / "tokenizer_config.json"
    return tok_config.exists() and bool(json.loads(tok_config.read_text()).get("chat_template"))


def _from_gguf(file: Path, root: Path) -> ModelMetadata:
    from gguf import GGUFReader

    reader = GGUFReader(str(file))

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None and f.data else None

    def count(key: str) -> int | None:  # some architectures store per-layer lists
        value = field(key)
        return max(value) if isinstance(value, list) and value else value

    arch = field("general.architecture")
    params, by_type = 0, Counter()
    for t in reader.tensors:
        params += int(t.n_elements)
        by_type[t.tensor_type.name] += int(t.n_elements)
    quants = Counter({k: v for k, v in by_type.items() if k not in GGUF_FLOATS})
    quant = quants.most_common(1)[0][0] if quants else None
    top = by_type.most_common(1)[0][0] if by_type else None
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    files, size = _files(root)
    return ModelMetadata(
        architecture=arch, model_type=arch, parameter_count=params,
        context_length=count(f"{arch}.context_length"), dtype=quant or GGUF_FLOATS.get(top, top),
        num_layers=count(f"{arch}.block_count"), hidden_size=count(f"{arch}.embedding_length"),
        num_attention_heads=count(f"{arch}.attention.head_count"),
        num_key_value_heads=count(f"{arch}.attention.head_count_kv"),
        vocab_size=field(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None),
        size_bytes=size, license=field("general.license"),
        has_chat_template=bool(field("tokenizer.chat_template")), format="gguf", quantization=quant, files=files,
    )
