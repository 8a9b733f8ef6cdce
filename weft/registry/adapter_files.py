"""Validation of an uploaded LoRA/DoRA adapter: one peft `.safetensors` file plus its metadata.

`read_safetensors_header` checks the file itself, `check_against_base` checks every adapter tensor against
the base model's weight shapes (both read headers only, no tensor is loaded), and `write_peft_folder` turns
the accepted file into a folder `peft.PeftModel.from_pretrained` loads.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from weft.errors import InvalidInput
from weft.scan.checks import SafetensorsHeaderError
from weft.scan.checks import read_safetensors_header as read_header

FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
PEFT_PREFIX = "base_model.model."
# peft's saved key names (the adapter name is stripped): `<module>.lora_A.weight`, `<module>.lora_B.weight`
# and, for DoRA, `<module>.lora_magnitude_vector`.
_ADAPTER_KEY = re.compile(r"(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_magnitude_vector)")
_MAGNITUDE = "lora_magnitude_vector"

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class AdapterFileError(InvalidInput):
    """The uploaded adapter file (or its metadata) does not fit: the message says why (HTTP 400)."""


class AdapterMetadata(BaseModel):
    """What the uploader says about the adapter; unknown keys are refused so a typo is not silently lost."""

    model_config = ConfigDict(extra="forbid")

    base_model: NonEmpty  # a model id or name in weft's registry (the caller resolves it)
    name: str | None = None
    algorithm: Literal["lora", "dora"] = "lora"
    rank: int = Field(ge=1, le=1024)
    alpha: float = Field(gt=0)
    target_modules: list[NonEmpty] = Field(min_length=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    description: str | None = None


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors' name: F16, BF16, F32, F64
    shape: tuple[int, ...]


class AdapterShape(BaseModel):
    """The accepted adapter: the base modules it adapts, its rank and its parameter count."""

    modules: list[str]
    rank: int
    trainable_parameters: int


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors adapter file, validated without loading them (the scan's header check, then
    floating dtypes only); the safetensors library then opens the file too, so nothing it would refuse gets
    through. Raises `AdapterFileError`."""
    try:
        header = read_header(Path(path))
    except SafetensorsHeaderError as exc:
        raise AdapterFileError(str(exc)) from None
    tensors = {}
    for name, (dtype, shape) in header.items():
        if dtype not in FLOAT_DTYPES:
            raise AdapterFileError(f"tensor {name} has dtype {dtype}; adapter weights must be floating point "
                                   f"({', '.join(FLOAT_DTYPES)})")
        tensors[name] = TensorInfo(dtype, shape)
    _library_agrees(Path(path), set(tensors))
    return tensors


def _library_agrees(path: Path, names: set[str]) -> None:
    """Open the file with `safetensors.safe_open` (memory-mapped, no tensor is read) as a second opinion."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    except Exception as exc:  # the library's errors are Rust-side SafetensorError/OSError variants
        raise AdapterFileError(f"not a safetensors file: the safetensors library refused it ({exc})") from None
    if keys != names:
        raise AdapterFileError("not a safetensors file: the safetensors library reads other tensor names")


def check_against_base(tensors: dict[str, TensorInfo], base_dir: Path, metadata: AdapterMetadata) -> AdapterShape:
    """Check the adapter's tensors (peft's saved names) against the base model folder's weight shapes and the
    metadata (rank, target modules, LoRA or DoRA); raises `AdapterFileError` naming the first problem.

    Only linear layers (base weight shape `(out_features, in_features)`) are supported.
    """
    modules = _group_by_module(tensors)
    base = _base_weight_shapes(Path(base_dir), metadata.base_model)
    dora = metadata.algorithm == "dora"
    for module, parts in sorted(modules.items()):
        key = f"{PEFT_PREFIX}{module}."
        for have, need in (
            ("lora_A.weight", "lora_B.weight"),
            ("lora_B.weight", "lora_A.weight"),
            (_MAGNITUDE, "lora_A.weight"),
        ):
            if have in parts and need not in parts:
                raise AdapterFileError(f"module {module} has {have} but no {need}")
        if not any(module == t or module.endswith("." + t) for t in metadata.target_modules):
            raise AdapterFileError(
                f"module {module} ({module.rsplit('.', 1)[-1]}) is not in target_modules {metadata.target_modules}"
            )
        if dora and _MAGNITUDE not in parts:
            raise AdapterFileError(
                f"algorithm is dora but module {module} has no {_MAGNITUDE} (a LoRA adapter? set algorithm to lora)"
            )
        if not dora and _MAGNITUDE in parts:
            raise AdapterFileError(
                f"the file has DoRA magnitude vectors ({key}{_MAGNITUDE}) but the algorithm "
                f"is lora; set algorithm to dora"
            )
        weight = base.get(f"{module}.weight")
        if weight is None:
            raise AdapterFileError(f"module {module} is not in base model {metadata.base_model}")
        if len(weight) != 2:
            raise AdapterFileError(
                f"module {module} is not a linear layer in base model {metadata.base_model} "
                f"(weight shape {list(weight)}); only linear layers are supported"
            )
        out_features, in_features = weight
        lora_a = parts["lora_A.weight"].shape
        if len(lora_a) == 2 and (rank := lora_a[0]) != metadata.rank:
            raise AdapterFileError(
                f"rank mismatch: tensor {key}lora_A.weight has rank {rank}, the metadata says {metadata.rank}"
            )
        expected = {
            "lora_A.weight": (metadata.rank, in_features),
            "lora_B.weight": (out_features, metadata.rank),
            _MAGNITUDE: (out_features,),
        }
        for part, info in parts.items():
            if info.shape != expected[part]:
                raise AdapterFileError(
                    f"shape mismatch: tensor {key}{part} has shape {list(info.shape)}, expected "
                    f"{list(expected[part])} for base model {metadata.base_model} "
                    f"({module}.weight is {list(weight)})"
                )
    for target in metadata.target_modules:
        if not any(m == target or m.endswith("." + target) for m in modules):
            raise AdapterFileError(f"target_modules lists {target} but the file has no adapter weights for it")
    return AdapterShape(
        modules=sorted(modules),
        rank=metadata.rank,
        trainable_parameters=sum(math.prod(t.shape) for t in tensors.values()),
    )


def _group_by_module(tensors: dict[str, TensorInfo]) -> dict[str, dict[str, TensorInfo]]:
    """`{module path: {part: info}}` from peft's saved key names; other tensors are refused."""
    if not tensors:
        raise AdapterFileError("the adapter file holds no tensors")
    modules: dict[str, dict[str, TensorInfo]] = {}
    for name, info in tensors.items():
        if "lora_embedding_" in name:
            raise AdapterFileError(f"tensor {name}: embedding adapters (lora_embedding_A/B) are not supported")
        match = _ADAPTER_KEY.fullmatch(name.removeprefix(PEFT_PREFIX)) if name.startswith(PEFT_PREFIX) else None
        if match is None:
            raise AdapterFileError(
                f"tensor {name} is not a LoRA/DoRA weight in peft's saved format "
                f"({PEFT_PREFIX}<module>.lora_A.weight, .lora_B.weight or .{_MAGNITUDE})"
            )
        modules.setdefault(match["module"], {})[match["part"]] = info
    return modules


def _base_weight_shapes(base_dir: Path, base_name: str) -> dict[str, tuple[int, ...]]:
    """Every tensor shape of a Hugging Face model folder, from its safetensors headers (sharded or not)."""
    from safetensors import safe_open

    index = base_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted({base_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(base_dir.glob("*.safetensors"))
    if not files:
        raise AdapterFileError(f"base model {base_name} has no safetensors weights to check the adapter against")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def write_peft_folder(file: Path, metadata: AdapterMetadata, base_model_path: str, out_dir: Path) -> Path:
    """A folder `PeftModel.from_pretrained` loads: the uploaded file as `adapter_model.safetensors` and an
    `adapter_config.json` written by peft's own `LoraConfig.save_pretrained`. Returns `out_dir`."""
    from peft import LoraConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, out_dir / "adapter_model.safetensors")
    alpha = int(metadata.alpha) if metadata.alpha.is_integer() else metadata.alpha  # peft saves an int alpha
    config = LoraConfig(
        r=metadata.rank,
        lora_alpha=alpha,
        target_modules=list(metadata.target_modules),
        lora_dropout=metadata.dropout,
        use_dora=metadata.algorithm == "dora",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_path,
    )
    config.save_pretrained(str(out_dir))
    return out_dir
