"""Dataset analysis throughput and peak memory against pandas `read_json(lines=True)` of the same file.

Generates N synthetic automotive records (default 1,000,000, ~0.5 GB of JSONL), then runs in fresh
processes (so each peak RSS is its own):
  * baseline: `pandas.read_json(path, lines=True)` (only parsing, nothing analysed);
  * weft: the analyze_dataset steps without Prefect around them: chunked profile pass, duplicates,
    outliers, the great-expectations pass, token lengths of the sample, recommendations.

Usage: .venv/bin/python benchmarks/dataset_analysis.py [--records 1000000] [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASELINE = """
import resource, sys, time, pandas as pd
t = time.perf_counter()
frame = pd.read_json(sys.argv[1], lines=True)
print(len(frame), time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

ANALYSIS = """
import resource, sys, time
from pathlib import Path
from weft.datasets.formats import iter_batches
from weft.datasets.profile import profile_batches
from weft.datasets.quality import find_duplicates, find_outliers
from weft.datasets.expectations import ChunkValidator
from weft.datasets.tokens import token_stats
from weft.datasets.recommend import recommendations
from weft.datasets.report import assemble
from weft.datasets.profile import detect_format
path, tokenizer, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter()
profile, arrays = profile_batches(iter_batches(path, "jsonl"), expected_rows=count)
dups = find_duplicates(arrays.exact_hashes, arrays.signatures)
outliers = find_outliers(arrays.lengths)
validator = ChunkValidator(profile.format, profile.columns, profile.text_columns)
validator.validate_batches(iter_batches(path, "jsonl"))
tokens = token_stats("bench", tokenizer, profile.sample, chat=False, context_length=2048, sampled=profile.sampled)
from pydantic import BaseModel
class Fmt(BaseModel):
    format: str
analysis = assemble("-", profile, Fmt(format=profile.format), tokens, dups, outliers, validator.report().model_dump())
analysis["recommendations"] = recommendations(analysis)
elapsed = time.perf_counter() - t
print(profile.record_count, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      dups.exact, dups.near, outliers.count, profile.missing_values)
"""


def run(code: str, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "true"})
    if out.returncode:
        raise SystemExit(out.stderr[-4000:])
    return out.stdout.strip().splitlines()[-1].split()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep the generated file here")
    args = parser.parse_args()
    from weft.datasets.synthetic import records
    from weft.testing.tiny_model import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="weft-bench-ds-"))
    path = args.keep or tmp / "procedures.jsonl"
    if not path.exists():
        t = time.perf_counter()
        with path.open("w") as fh:
            for record in records(args.records, exact_duplicates=args.records // 1000, near_duplicates=100,
                                  missing_tools=args.records // 200, outliers=50, step_range=(2, 7)):
                fh.write(json.dumps(record) + "\n")
        print(f"generated {path} in {time.perf_counter() - t:.0f} s")
    tokenizer = build_tiny_model(tmp / "tokenizer")
    size = path.stat().st_size
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"file: {size / 1e9:.2f} GB JSONL")

    n, base_s, base_rss = run(BASELINE, str(path))
    # the record count comes from the upload's validation in weft; it sizes the per-record arrays
    rows, weft_s, weft_rss, exact, near, outliers, missing = run(ANALYSIS, str(path), str(tokenizer), n)
    base_s, weft_s, base_rss, weft_rss = float(base_s), float(weft_s), int(base_rss), int(weft_rss)
    print(f"\n{'':34}{'records/s':>12}{'seconds':>10}{'peak RSS':>12}")
    print(f"{'pandas read_json(lines=True)':34}{int(n) / base_s:>12,.0f}{base_s:>10.1f}{base_rss / 2**30:>9.2f} GiB")
    print(f"{'weft analysis (all steps)':34}{int(rows) / weft_s:>12,.0f}{weft_s:>10.1f}{weft_rss / 2**30:>9.2f} GiB")
    print(f"\ntime ratio weft/baseline {weft_s / base_s:.2f}x (goal <= 3x); weft peak RSS "
          f"{weft_rss / 2**30:.2f} GiB (goal < 1 GiB)")
    print(f"found: {exact} exact duplicates, {near} near duplicates, {outliers} outliers, {missing} missing values")


if __name__ == "__main__":
    main()
