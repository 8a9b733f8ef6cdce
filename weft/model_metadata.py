"""What a model folder (or a single GGUF file) says about itself, read without loading weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx", "max_sequence_length")
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
SAFETENSORS_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I8": "int8",
                     "U8": "uint8", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


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
    ggufs = [path] if path.is_file() else sorted(path.glob("*.gguf"))
    if path.is_dir() and (path / "config.json").exists():
        return _from_hf_folder(path)
    if ggufs:
        return _from_gguf(ggufs[0], root=path)
    raise ValueError(f"{path} has neither a config.json with weights nor a .gguf file")


def _files(root: Path) -> tuple[list[str], int]:
    if root.is_file():
        return [root.name], root.stat().st_size
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [p.relative_to(root).as_posix() for p in files], sum(p.stat().st_size for p in files)


def _from_hf_folder(root: Path) -> ModelMetadata:
    config: dict[str, Any] = json.loads((root / "config.json").read_text())
    text = config.get("text_config") or {}
    get = lambda *keys: next((c[k] for k in keys for c in (config, text) if c.get(k) is not None), None)  # noqa: E731
    params, dtype, fmt = _count_safetensors(root)
    if params == 0:
        params, dtype, fmt = _count_torch_bin(root)
    if params == 0:
        raise ValueError(f"{root} has a config.json but no *.safetensors or *.bin weights")
    files, size = _files(root)
    quant = config.get("quantization_config", {}).get("quant_method") if config.get("quantization_config") else None
    return ModelMetadata(
        architecture=(config.get("architectures") or [None])[0], model_type=config.get("model_type"),
        parameter_count=params, context_length=get(*CONTEXT_KEYS),
        dtype=config.get("dtype") or config.get("torch_dtype") or dtype, num_layers=get("num_hidden_layers", "n_layer"),
        hidden_size=get("hidden_size", "n_embd", "d_model"), num_attention_heads=get("num_attention_heads", "n_head"),
        num_key_value_heads=get("num_key_value_heads"), vocab_size=get("vocab_size"), size_bytes=size,
        license=_card_license(root), has_chat_template=_has_chat_template(root), format=fmt, quantization=quant,
        files=files,
    )


def _count_safetensors(root: Path) -> tuple[int, str | None, str]:
    """Exact parameter count from the safetensors headers (no tensor is loaded)."""
    from safetensors import safe_open

    total, dtypes = 0, set()
    for file in sorted(root.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                numel = 1
                for dim in sl.get_shape():
                    numel *= dim
                total += numel
                dtypes.add(sl.get_dtype())
    dtype = SAFETENSORS_DTYPE.get(next(iter(dtypes)), None) if len(dtypes) == 1 else None
    return total, dtype, "safetensors"


def _count_torch_bin(root: Path) -> tuple[int, str | None, str]:
    files = sorted(root.glob("pytorch_model*.bin"))
    if not files:
        return 0, None, "pytorch"
    import torch

    total, dtype = 0, None
    for file in files:
        state = torch.load(file, map_location="meta", weights_only=True)
        for tensor in state.values():
            total += tensor.numel()
            dtype = str(tensor.dtype).removeprefix("torch.")
    return total, dtype, "pytorch"


def _card_license(root: Path) -> str | None:
    readme = root / "README.md"
    if not readme.exists():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme).data.license
    except Exception:
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
        if f is None or not f.data:
            return None
        value = f.parts[f.data[0]]
        if f.types and f.types[0].name == "STRING":
            return bytes(value).decode("utf-8", errors="replace")
        return value.tolist()[0] if hasattr(value, "tolist") else value

    arch = field("general.architecture")
    params = sum(int(t.n_elements) for t in reader.tensors)
    quant_types = {t.tensor_type.name for t in reader.tensors}
    weight_quant = sorted(q for q in quant_types if q not in ("F32", "F16", "BF16"))
    files, size = _files(root)
    return ModelMetadata(
        architecture=arch, model_type=arch, parameter_count=params,
        context_length=field(f"{arch}.context_length"), dtype="/".join(sorted(quant_types)),
        num_layers=field(f"{arch}.block_count"), hidden_size=field(f"{arch}.embedding_length"),
        num_attention_heads=field(f"{arch}.attention.head_count"),
        num_key_value_heads=field(f"{arch}.attention.head_count_kv"),
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else None,
        size_bytes=size, license=field("general.license"),
        has_chat_template=field("tokenizer.chat_template") is not None, format="gguf",
        quantization=weight_quant[0] if weight_quant else None, files=files,
    )
