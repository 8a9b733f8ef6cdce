"""Continuous batching in weft's transformers server: generated tokens/s and request latency (p50, p99) at
1, 4, 8 and 16 concurrent clients, one sequence at a time (`--max-batch 1`, the baseline) next to batched
(`--max-batch 16`, the server's default, or --max-batch N), in one run.

What runs: for each model, the tiny test model (built into a temporary folder) and SmolLM2-135M-Instruct
when its folder exists (`weft demo-model` / `make demo-model` builds it under
$WEFT_HOME/demo-models/SmolLM2-135M-Instruct, WEFT_HOME being `.weft` unless set; or pass --smollm DIR),
two `python -m weft.serving.server` processes on free ports, one after the other (never both at once: the
machine may have 2 cores): the one-at-a-time server, then the batched one. Each is waited for on
GET /health (which must report the --max-batch asked for), warmed up with one completion, measured at each
--clients level, and stopped (SIGTERM, then SIGKILL after 15 s; also on Ctrl-C or an error, and the
server gets SIGTERM from the kernel should this script die: PR_SET_PDEATHSIG).

Clients are asyncio tasks in this process (httpx, one connection each). Every client sends
POST /v1/completions back to back: --requests of them (default), or as many as it starts within --seconds.
Requests are greedy (temperature 0), --max-tokens long at most, over varied prompts of varied lengths (the
client and its request number pick one). tokens/s is the completion tokens from the answers' `usage`,
summed over all requests of a level, divided by the level's wall time (first request sent to last answer);
latency is each request's time to its full (non-streamed) answer.

Torch threads: left at torch's default in the servers (one per core); --torch-threads N sets
OMP_NUM_THREADS=N for them. Measured on the 2-core machine (2026-12, plain `generate` of SmolLM2, fp32) while
other processes kept it busy (load average 2.5-3.5): 2 threads fell to 2.4-4.6 tokens/s at batch 1 and 25-56
at batch 16, 1 thread held 10.6-12.8 and 55-65; on a quiet machine both gave 12-13 at batch 1. So figures
from a shared machine are only comparable with --torch-threads 1; each level prints the 1-minute load
average to tell. The clients are cheap next to the model (asyncio, one thread in this process).

The goals of the batching issue are printed as figures, not asserted:
  at 16 clients, batched tokens/s ≥ 5× one-at-a-time on SmolLM2
  batched p50 latency at 8 clients ≤ 2× batched single-client p50
Greedy texts of the same prompt are compared between the two servers and across levels (batched rows are
left-padded, so a float32 rounding may flip a near-tie: a note, not an error).

Usage: .venv/bin/python benchmarks/serving_throughput.py [--only tiny,smollm] [--smollm DIR] [--clients 1,4,8,16]
           [--requests 4 | --seconds S] [--max-tokens 64] [--max-batch 16] [--torch-threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from weft.testing.polling import ok, wait_for  # noqa: E402  (the repository's weft when run from a checkout)

MODELS = ("tiny", "smollm")
PROMPTS = [
    "check the oil level",
    "replace the brake pads and then",
    "The quickest way to rotate the tires on a family car is",
    "2 + 2 = 4, and 3 + 3 =",
    "Write a short story about a mechanic who finds a strange noise in an old engine.",
    "Explain in plain words why an engine needs oil, and what happens when it runs low:",
    "Here is a list of things to check before a long drive:\n1.",
    "Once upon a time",
    "The history of the bicycle begins in",
    "Q: What is the capital of France?\nA:",
    "A recipe for a simple tomato soup. Ingredients:",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Dear customer, thank you for bringing your car in for its yearly service. We found that",
    "The three most important rules of safe driving in the rain are",
    "Summary of the meeting notes: the team agreed to",
    "In 1969, the first people walked on the Moon. The mission",
    "Tips for learning a new language quickly:",
    "rotate the tires",
    "The weather today is cloudy with a chance of rain, so remember to",
    "A haiku about autumn leaves:\n",
]
STOP_WAIT = 15.0  # seconds between SIGTERM and SIGKILL for a server


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile of `values`, linearly interpolated between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def default_smollm() -> Path:
    """Where `weft demo-model` puts SmolLM2 for this environment's settings ($WEFT_HOME, default .weft)."""
    from weft.settings import get_settings

    return get_settings().home_dir / "demo-models" / "SmolLM2-135M-Instruct"


class Server:
    """One `python -m weft.serving.server` process on a free port; `stop()` (always call it) ends it."""

    def __init__(self, model_dir: Path, name: str, max_batch: int, log_file: Path, env: dict[str, str]) -> None:
        from weft.net import free_port
        from weft.serving.launch import _die_with_parent

        self.name, self.max_batch, self.log_file = name, max_batch, log_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "weft.serving.server", "--model", str(model_dir), "--name", name,
               "--host", "127.0.0.1", "--port", str(self.port), "--max-batch", str(max_batch),
               "--log-level", "warning"]
        with log_file.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                         preexec_fn=_die_with_parent)

    def tail(self, chars: int = 2000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""

    def health(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """GET /health's JSON; None while the server does not answer. RuntimeError once it has exited."""
        import httpx

        if self.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.tail()}")
        try:
            r = httpx.get(f"{self.url}/health", timeout=timeout)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        try:
            health = wait_for(self.health, f"{self.name} (--max-batch {self.max_batch}) healthy", timeout, poll=0.5)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its log ends:\n{self.tail()}") from None
        if health.get("max_batch") != self.max_batch:
            raise RuntimeError(f"/health reports max_batch={health.get('max_batch')}, asked for {self.max_batch}")
        return health

    def idle(self, timeout: float = 60) -> None:
        """Until /health reports no sequence running or waiting (nothing left over from the level before)."""
        wait_for(lambda: (h := self.health()) is not None and h["running_sequences"] == 0,
                 f"{self.name}: no running sequences", timeout)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after STOP_WAIT seconds; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                print(f"  ! {self.name} (--max-batch {self.max_batch}) ignored SIGTERM for {STOP_WAIT:g} s: SIGKILL")
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode


async def measure(url: str, name: str, clients: int, requests: int | None, seconds: float | None,
                  max_tokens: int) -> dict[str, Any]:
    """`clients` clients sending completions back to back; tokens/s, latency percentiles, greedy texts."""
    import httpx

    latencies: list[float] = []
    tokens = 0
    errors: list[str] = []
    texts: dict[str, set[str]] = {}
    deadline = None if seconds is None else time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient, index: int) -> None:
        nonlocal tokens
        n = 0
        while (n < requests) if deadline is None else (time.perf_counter() < deadline):
            prompt = PROMPTS[(index * 7 + n) % len(PROMPTS)]
            body = {"model": name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
            n += 1
            start = time.perf_counter()
            try:
                r = await http.post("/v1/completions", json=body)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if r.status_code != 200:
                errors.append(f"{r.status_code}: {r.text[:300]}")
                continue
            latencies.append(time.perf_counter() - start)
            answer = r.json()
            tokens += answer["usage"]["completion_tokens"]
            texts.setdefault(prompt, set()).add(answer["choices"][0]["text"])

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http, i) for i in range(clients)))
        wall = time.perf_counter() - start
    return {"clients": clients, "load_average": os.getloadavg()[0], "requests": len(latencies),
            "errors": len(errors), "first_error": errors[0] if errors else None, "completion_tokens": tokens,
            "wall_s": wall, "tokens_per_s": tokens / wall if wall else 0.0,
            "tokens_per_request": tokens / len(latencies) if latencies else 0.0,
            "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99),
            "texts": {p: sorted(t) for p, t in texts.items()}}


def run_server(model_dir: Path, name: str, max_batch: int, levels: list[int], args: argparse.Namespace,
               tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """Start one server, warm it up, measure every level, stop it (whatever happens)."""
    label = "one-at-a-time" if max_batch == 1 else "batched"
    t = time.perf_counter()
    server = Server(model_dir, name, max_batch, tmp / f"{name}-max-batch-{max_batch}.log", env)
    try:
        health = server.wait_healthy(args.start_timeout)
        started = time.perf_counter() - t
        import httpx

        t = time.perf_counter()
        ok(httpx.post(f"{server.url}/v1/completions", timeout=900, json={
            "model": name, "prompt": PROMPTS[0], "max_tokens": args.max_tokens, "temperature": 0}))
        warm = time.perf_counter() - t
        print(f"{name} {label} (--max-batch {max_batch}, port {server.port}): healthy in {started:.1f} s "
              f"(/health max_batch={health['max_batch']}), warm-up completion {warm:.2f} s", flush=True)
        levels_out = []
        for clients in levels:
            server.idle()
            row = asyncio.run(measure(server.url, name, clients, args.requests, args.seconds, args.max_tokens))
            levels_out.append(row)
            print(f"  {clients:>3} clients: {row['requests']:>4} requests, {row['completion_tokens']:>6} tokens "
                  f"in {row['wall_s']:6.1f} s = {row['tokens_per_s']:7.1f} tokens/s; p50 {row['p50_s']:.2f} s, "
                  f"p99 {row['p99_s']:.2f} s; load {row['load_average']:.1f}"
                  + (f"; {row['errors']} errors, first: {row['first_error']}" if row["errors"] else ""), flush=True)
    finally:
        code = server.stop()
    # uvicorn shuts down on SIGTERM and then raises the signal again: -15 is a clean stop
    if code not in (0, -signal.SIGTERM):
        print(f"  note: {name} --max-batch {max_batch} exited with {code}; its log ends:\n{server.tail(1000)}")
    return {"max_batch": max_batch, "startup_s": started, "warmup_s": warm, "exit_code": code, "levels": levels_out}


def text_agreement(one: dict[str, Any], batched: dict[str, Any]) -> tuple[int, int]:
    """Prompts whose greedy text differed (between the servers or across levels), of the prompts answered."""
    seen: dict[str, set[str]] = {}
    for run in (one, batched):
        for level in run["levels"]:
            for prompt, texts in level["texts"].items():
                seen.setdefault(prompt, set()).update(texts)
    return sum(len(t) > 1 for t in seen.values()), len(seen)


def table(label: str, one: dict[str, Any], batched: dict[str, Any]) -> list[str]:
    b = batched["max_batch"]
    head = (f"{'clients':>7} | {'tok/s 1-at-a-time':>17} | {f'tok/s batched ({b})':>19} | {'ratio':>6} | "
            f"{'p50 1-at-a-time':>15} | {'p99 1-at-a-time':>15} | {'p50 batched':>11} | {'p99 batched':>11} | "
            f"{'tok/req':>7}")
    lines = [f"\n{label}: tokens/s and latency (seconds), one-at-a-time (--max-batch 1) vs batched "
             f"(--max-batch {b})", head, "-" * len(head)]
    for o, g in zip(one["levels"], batched["levels"]):
        ratio = g["tokens_per_s"] / o["tokens_per_s"] if o["tokens_per_s"] else float("nan")
        errors = o["errors"] + g["errors"]
        lines.append(f"{o['clients']:>7} | {o['tokens_per_s']:>17.1f} | {g['tokens_per_s']:>19.1f} | {ratio:>5.2f}× | "
                     f"{o['p50_s']:>15.2f} | {o['p99_s']:>15.2f} | {g['p50_s']:>11.2f} | {g['p99_s']:>11.2f} | "
                     f"{o['tokens_per_request']:>3.0f}/{g['tokens_per_request']:.0f}"
                     + (f"  ({errors} failed requests)" if errors else ""))
    return lines


def goals(results: dict[str, Any]) -> list[str]:
    """The issue's two goals as figures, with MET / NOT MET / not measured."""
    def level(model: str, run: str, clients: int) -> dict[str, Any] | None:
        runs = results["models"].get(model, {})
        return next((x for x in runs.get(run, {}).get("levels", []) if x["clients"] == clients), None)

    out = []
    what = "goal 1 (at 16 clients, batched tokens/s ≥ 5× one-at-a-time on SmolLM2)"
    smol = results["models"].get("smollm")
    one16, b16 = level("smollm", "one_at_a_time", 16), level("smollm", "batched", 16)
    if smol is None:
        out.append(f"{what}: not measured: smollm is not in --only")
    elif smol.get("skipped"):
        out.append(f"{what}: not measured: {smol['skipped']}")
    elif one16 is None or b16 is None:
        out.append(f"{what}: not measured: 16 is not in --clients")
    else:
        ratio = b16["tokens_per_s"] / one16["tokens_per_s"] if one16["tokens_per_s"] else float("nan")
        out.append(f"{what}: {b16['tokens_per_s']:.1f} / {one16['tokens_per_s']:.1f} tokens/s = {ratio:.2f}× "
                   f"→ {'MET' if ratio >= 5 else 'NOT MET'}")
    for model, runs in results["models"].items():
        if runs.get("skipped"):
            continue
        b1, b8 = level(model, "batched", 1), level(model, "batched", 8)
        what = f"goal 2 (batched p50 latency at 8 clients ≤ 2× batched single-client p50) on {model}"
        if b1 is None or b8 is None:
            out.append(f"{what}: not measured: --clients needs 1 and 8")
            continue
        ratio = b8["p50_s"] / b1["p50_s"] if b1["p50_s"] else float("nan")
        out.append(f"{what}: {b8['p50_s']:.2f} s / {b1['p50_s']:.2f} s = {ratio:.2f}× "
                   f"→ {'MET' if ratio <= 2 else 'NOT MET'}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(MODELS), help=f"models, comma-separated, of {','.join(MODELS)}")
    parser.add_argument("--smollm", type=Path, default=None,
                        help="SmolLM2-135M-Instruct folder (default: $WEFT_HOME/demo-models/SmolLM2-135M-Instruct)")
    parser.add_argument("--clients", default="1,4,8,16", help="concurrent client levels, comma-separated")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, default=None, help="requests per client and level (default 4)")
    amount.add_argument("--seconds", type=float, default=None,
                        help="instead of --requests: each client starts requests for this long per level")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every completion")
    parser.add_argument("--max-batch", type=int, default=16, help="--max-batch of the batched server")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the servers (default: unset, torch's own choice)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds for a server to become healthy")
    parser.add_argument("--json", type=Path, default=None, help="write the results (figures, settings) here")
    args = parser.parse_args()
    models = [m for m in args.only.split(",") if m]
    if set(models) - set(MODELS) or not models:
        parser.error(f"--only: choose from {','.join(MODELS)}")
    try:
        levels = [int(c) for c in args.clients.split(",") if c]
    except ValueError:
        parser.error("--clients: comma-separated integers, e.g. 1,4,8,16")
    if not levels or min(levels) < 1:
        parser.error("--clients: at least one level, each ≥ 1")
    if args.seconds is None and args.requests is None:
        args.requests = 4
    if args.max_batch < 2:
        parser.error("--max-batch: the batched server needs 2 or more (1 is the baseline, always run)")

    smollm = (args.smollm or default_smollm()).expanduser().resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    amount_text = f"{args.requests} requests per client" if args.seconds is None else f"{args.seconds:g} s per client"
    print(f"levels {levels} clients; {amount_text}; max_tokens {args.max_tokens}; greedy; batched --max-batch "
          f"{args.max_batch}; torch threads {args.torch_threads or 'default'}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    results: dict[str, Any] = {"settings": {"clients": levels, "requests": args.requests, "seconds": args.seconds,
                                            "max_tokens": args.max_tokens, "max_batch": args.max_batch,
                                            "torch_threads": args.torch_threads, "cpus": os.cpu_count()},
                               "models": {}}
    lines: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="weft-bench-throughput-"))
    try:
        for model in models:
            if model == "tiny":
                from weft.testing.tiny_model import build_tiny_model

                model_dir, name = build_tiny_model(tmp / "tiny-llama"), "tiny"
            elif (smollm / "config.json").is_file():
                model_dir, name = smollm, "smollm"
            else:
                why = (f"no model folder at {smollm} (build it with `weft demo-model` or `make demo-model`, "
                       "or pass --smollm DIR)")
                results["models"]["smollm"] = {"skipped": why}
                print(f"SmolLM2-135M-Instruct SKIPPED: {why}", flush=True)
                continue
            one = run_server(model_dir, name, 1, levels, args, tmp, env)
            batched = run_server(model_dir, name, args.max_batch, levels, args, tmp, env)
            differ, prompts = text_agreement(one, batched)
            results["models"][name] = {"model_dir": str(model_dir), "one_at_a_time": one, "batched": batched,
                                       "prompts_with_differing_greedy_text": differ, "prompts": prompts}
            label = "tiny test model" if name == "tiny" else f"SmolLM2-135M-Instruct ({model_dir})"
            lines += table(label, one, batched)
            lines.append(f"greedy texts: {differ} of {prompts} prompts got more than one text "
                         "(across servers and levels)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for line in lines:
        print(line)
    print()
    results["goals"] = goals(results)
    for line in results["goals"]:
        print(line)
    if results["models"].get("smollm", {}).get("skipped"):
        print(f"note: SmolLM2-135M-Instruct skipped: {results['models']['smollm']['skipped']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
