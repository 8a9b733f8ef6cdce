"""Security-scan throughput on a 500 MB model folder, against the modelscan CLI alone in the same run.

The folder holds a 400 MB safetensors file, a 100 MB PyTorch (zip) checkpoint, a config and a
tokenizer file. weft's scan = sha256 of every file + modelscan and picklescan on the checkpoint (each
file in its own time-limited process) + safetensors header validation + code and GGUF checks.

Usage: .venv/bin/python benchmarks/security_scan.py [--mb 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_folder(root: Path, total_mb: int) -> int:
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    st_floats = int(total_mb * 0.8 * 2**20 / 4)
    pt_floats = int(total_mb * 0.2 * 2**20 / 4)
    save_file({"model.embed.weight": torch.zeros(st_floats // 1024, 1024)}, root / "model.safetensors")
    torch.save({"head.weight": torch.zeros(pt_floats // 1024, 1024)}, root / "pytorch_model.bin")
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (root / "tokenizer.json").write_text("{}")
    return sum(p.stat().st_size for p in root.iterdir())


def weft_scan(root: Path) -> tuple[float, str]:
    from weft.scan.checks import code_issues, kind_of
    from weft.scan.isolated import run_isolated
    from weft.scan.report import roll_up, sha256_of

    t = time.perf_counter()
    files = {p.name: sha256_of(p) for p in sorted(root.iterdir())}
    issues = []
    for name in files:
        kind = kind_of(Path(name))
        if kind in ("pickle", "safetensors", "gguf"):
            issues += run_isolated(kind, root / name, name)
    issues += code_issues(root)
    scanned = [n for n in files if kind_of(Path(n))]
    result = roll_up(issues, scanned, len(files) - len(scanned), files)
    return time.perf_counter() - t, result.status


def modelscan_cli(root: Path) -> tuple[float, int]:
    exe = Path(sys.executable).with_name("modelscan")
    t = time.perf_counter()
    done = subprocess.run([str(exe), "-p", str(root)], capture_output=True, text=True)
    return time.perf_counter() - t, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="weft-bench-scan-"))
    try:
        size = build_folder(tmp / "model", args.mb)
        mb = size / 2**20
        print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"folder: {mb:.0f} MB (model.safetensors, pytorch_model.bin, config.json, tokenizer.json)")
        cli_s, cli_rc = modelscan_cli(tmp / "model")
        weft_s, status = weft_scan(tmp / "model")
        print(f"\n{'':38}{'seconds':>9}{'MB/s':>9}")
        print(f"{'modelscan CLI alone (exit ' + str(cli_rc) + ')':38}{cli_s:>9.2f}{mb / cli_s:>9.0f}")
        print(f"{'weft scan (hashes + 4 checks), ' + status:38}{weft_s:>9.2f}{mb / weft_s:>9.0f}")
        print(f"\nratio weft/modelscan time: {weft_s / cli_s:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
