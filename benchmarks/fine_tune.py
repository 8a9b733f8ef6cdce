"""Training throughput: weft's fine_tune vs a plain trl SFTTrainer script, same model, rows and config.

(a) weft: the real `fine_tune` flow (flows/fine_tune.py) in-process against a temporary Prefect server,
    with the model and dataset registered in a temporary WEFT_HOME: resolve inputs, prepare records,
    pre-flight, train (trl SFTTrainer + weft's callback, every checkpoint mirrored to storage), register.
    `--weft train` times weft.training.trainer.train() alone instead (checkpoint mirroring included).
    `--weft platform` runs it through the real platform (`weft up`: Prefect server, worker, API as
    subprocesses) as POST /api/v1/jobs, its logs followed over SSE by a client thread until the end event,
    and prints the CPU seconds each platform process used while the job trained (see
    benchmarks/fine_tune_platform.py; the platform is SIGSTOPped while the plain script runs).
(b) plain: SFTTrainer with the SFTConfig weft uses (activation_checkpointing=False, bf16=False, use_cpu
    when there is no CUDA, same batch / sequence length / steps / save steps / seed) and the same
    LoraConfig; `--method qlora` loads the base 4-bit nf4 with BitsAndBytesConfig in both.

Both run in this one process, alternating which goes first, `--repeats` times each. tokens/s is
trained tokens (trl's count) / train_runtime (the Trainer's own timer, so model loading, dataset
preparation and the flow's other steps are outside it; checkpoint saves and weft's mirroring are inside).

Usage: .venv/bin/python benchmarks/fine_tune.py [--model PATH] [--method lora|qlora|dora] [--steps 60]
       [--batch-size 8] [--max-seq-length 128] [--repeats 3] [--weft flow|train|platform]
       [--platform-idle stop|run]
Default model: the tiny test Llama (weft/testing/tiny_model.py), built in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="weft-bench-ft-"))
os.environ["WEFT_HOME"] = str(TMP / "home")  # before anything reads weft's settings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # keep the flow's run logs off the console
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def train_config(args):
    from weft.training.config import TrainConfig

    return TrainConfig(method=args.method, rank=args.rank, alpha=2 * args.rank, dropout=0.0,
                       learning_rate=args.learning_rate, batch_size=args.batch_size, max_steps=args.steps,
                       warmup_steps=0, max_seq_length=args.max_seq_length, logging_steps=args.logging_steps,
                       checkpoint_steps=args.checkpoint_steps, seed=42)


def load_rows(path: Path) -> list[dict[str, Any]]:
    from weft.training.records import training_record

    return [training_record(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


# --- (b) the plain script ---------------------------------------------------------------------------------

def plain_run(model_dir: Path, rows: list[dict[str, Any]], config, work: Path) -> dict[str, float]:
    """What someone would write by hand: load, LoraConfig, SFTConfig (weft's settings), train."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant)
        if not torch.cuda.is_available():
            import bitsandbytes as bnb

            for module in model.modules():
                if isinstance(module, bnb.nn.Linear4bit):
                    module.support_avx512bf16_for_cpu = False
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = SFTConfig(
        output_dir=str(work / "trainer"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs, max_steps=config.max_steps or -1, warmup_steps=config.warmup_steps,
        save_strategy="steps", save_steps=config.checkpoint_steps, logging_steps=config.logging_steps,
        eval_strategy="no", activation_checkpointing=False, bf16=False, fp16=False,
        use_cpu=not torch.cuda.is_available(), report_to=[], seed=config.seed, max_length=config.max_seq_length,
        save_only_model=False, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                             target_modules=config.target_modules, use_dora=config.method == "dora",
                             task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    cpu0 = time.process_time()
    output = trainer.train()
    cpu = time.process_time() - cpu0  # this process's CPU seconds while training (every thread)
    trainer.model.save_pretrained(work / "adapter")
    tokens = getattr(trainer, "_total_train_tokens", 0) or max(
        (h.get("num_tokens", 0) for h in trainer.state.log_history), default=0)
    return {"train_runtime": float(output.metrics["train_runtime"]), "train_tokens": float(tokens),
            "train_loss": float(output.metrics.get("train_loss", 0.0)), "global_step": float(trainer.state.global_step),
            "train_cpu": cpu}


# --- (a) weft ---------------------------------------------------------------------------------------------

class WeftFlow:
    """A temporary Prefect server + the registered model and dataset; each run is one fine_tune flow."""

    def __init__(self, model_dir: Path, rows_file: Path) -> None:
        from contextlib import ExitStack

        from prefect.filesystems import LocalFileSystem
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        from weft.db import migrate
        from weft.settings import get_settings

        self.stack = ExitStack()
        self.stack.enter_context(prefect_test_harness(server_startup_timeout=90))
        self.stack.enter_context(temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        LocalFileSystem(basepath=str(TMP / "results")).save(get_settings().result_storage_block.split("/", 1)[1],
                                                            overwrite=True)
        migrate()
        from weft.testing.registry import register_dataset, register_model, register_user

        rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
        user_id = register_user()
        self.user_id, self.model_id = user_id, register_model(user_id, model_dir, name="bench base")
        self.dataset_id = register_dataset(user_id, "bench-rows", rows)

    def run(self, config) -> dict[str, float]:
        from flows.fine_tune import fine_tune
        from weft.db import session_scope
        from weft.specs.training import FineTuneSpec
        from weft.tables import Adapter, Model

        spec = FineTuneSpec(base_model=self.model_id, dataset_id=self.dataset_id, name="bench", config=config)
        t0 = time.perf_counter()
        state = fine_tune(spec=spec, owner_id=self.user_id, return_state=True)
        wall = time.perf_counter() - t0
        if not state.is_completed():
            raise RuntimeError(f"fine_tune flow {state.type}: {state.message}")
        with session_scope() as s:
            adapter = s.get(Adapter, s.get(Model, state.result()).details["adapter_id"])
            metrics = dict(adapter.metrics)
        return {**metrics, "flow_wall": wall}

    def close(self) -> None:
        self.stack.close()


def weft_train_run(model_dir: Path, rows: list[dict[str, Any]], config, work: Path) -> dict[str, float]:
    from weft.storage import Storage
    from weft.training.checkpoints import CheckpointStore
    from weft.training.trainer import train

    store = CheckpointStore(Storage(root=(work / "storage").as_uri()), "runs/bench/checkpoints")
    result = train(model_dir, rows, config, work / "work", store, on_log=lambda line: None)
    return dict(result.metrics)


def tokens_per_second(m: dict[str, float]) -> float:
    return m["train_tokens"] / m["train_runtime"] if m.get("train_runtime") else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a local HF model folder (default: tiny test Llama)")
    parser.add_argument("--rows", type=Path, default=ROOT / "data" / "demo" / "train.jsonl")
    parser.add_argument("--method", choices=["lora", "qlora", "dora"], default="lora")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--logging-steps", type=int, default=5)
    parser.add_argument("--checkpoint-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating which goes first")
    parser.add_argument("--weft", choices=["flow", "train", "platform"], default="flow",
                        help="flow: the fine_tune flow on a temporary Prefect server; train: trainer.train() only; "
                             "platform: a job through the real platform's API with its logs followed over SSE")
    parser.add_argument("--platform-idle", choices=["stop", "run"], default="stop",
                        help="with --weft platform: stop the platform's processes while the plain script runs "
                             "(a machine without weft), or leave them running idle")
    parser.add_argument("--idle-seconds", type=float, default=0,
                        help="with --weft platform: first measure the idle platform's CPU for this long")
    args = parser.parse_args()

    import torch
    import transformers
    import trl

    try:
        if args.model is None:
            from weft.testing.tiny_model import build_tiny_model

            model_dir, model_name = build_tiny_model(TMP / "tiny-llama"), "tiny test Llama (weft/testing/tiny_model.py)"
        else:
            model_dir, model_name = args.model.expanduser().resolve(), str(args.model)
        rows = load_rows(args.rows)
        config = train_config(args)
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
            f"cpu ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"
        weft_label = {
            "flow": "weft fine_tune flow (in-process, temporary Prefect server, checkpoints mirrored to storage)",
            "train": "weft.training.trainer.train() (checkpoints mirrored to storage)",
            "platform": "a job through the platform (weft up: Prefect server, cpu worker, API; POST /api/v1/jobs), "
                        "logs followed over SSE by a client thread",
        }[args.weft]
        print(f"model   : {model_name}")
        print(f"rows    : {args.rows} ({len(rows)} records)")
        print(f"config  : {args.method} r={config.rank} batch={config.batch_size} seq={config.max_seq_length} "
              f"steps={config.max_steps} save_steps={config.checkpoint_steps} lr={config.learning_rate}")
        print(f"device  : {device}; {host.python_implementation()} {host.python_version()}, torch {torch.__version__}, "
              f"transformers {transformers.__version__}, trl {trl.__version__}")
        print(f"(a)     : {weft_label}")
        print("(b)     : plain trl SFTTrainer script, same SFTConfig and LoraConfig")

        if args.weft == "platform":
            from benchmarks.fine_tune_platform import WeftPlatform

            weft = WeftPlatform(model_dir, args.rows, idle=args.platform_idle)
            print(f"platform: up in {weft.start_seconds:.0f} s ({weft.platform.api_url}); plain runs with the "
                  f"platform {'stopped (SIGSTOP)' if args.platform_idle == 'stop' else 'running idle'}", flush=True)
            if args.idle_seconds:
                idle = weft.idle_cpu(args.idle_seconds)
                print(f"platform idle for {args.idle_seconds:.0f} s (no job), share of one core: "
                      + ", ".join(f"{k} {100 * v:.1f}%" for k, v in idle.items()), flush=True)
        else:
            weft = WeftFlow(model_dir, args.rows) if args.weft == "flow" else None
        results: dict[str, list[dict[str, float]]] = {"weft": [], "plain": []}
        try:
            for i in range(args.repeats):
                order = ["weft", "plain"] if i % 2 == 0 else ["plain", "weft"]
                for name in order:
                    work = TMP / f"{name}-{i}"
                    if name == "plain" and args.weft == "platform":
                        weft.pause()
                        try:
                            m = plain_run(model_dir, rows, config, work)
                        finally:
                            weft.resume()
                    elif name == "plain":
                        m = plain_run(model_dir, rows, config, work)
                    elif weft is not None:
                        m = weft.run(config)
                    else:
                        m = weft_train_run(model_dir, rows, config, work)
                    shutil.rmtree(work, ignore_errors=True)
                    results[name].append(m)
                    extra = f", flow wall {m['flow_wall']:.1f} s" if "flow_wall" in m else ""
                    if "cpu" in m:
                        extra += (f", {m['lines']}/{m['log_lines']} log lines over SSE, end event "
                                  f"{'yes' if m['ended'] else 'NO'}, line latency median {m['latency_median']:.1f} s "
                                  f"max {m['latency_max']:.1f} s")
                    print(f"  run {i + 1} {name:5s}: {m['train_tokens']:.0f} tokens in {m['train_runtime']:.2f} s = "
                          f"{tokens_per_second(m):.0f} tokens/s (loss {m.get('train_loss', float('nan')):.4f}{extra})",
                          flush=True)
        finally:
            if weft is not None:
                weft.close()

        if args.weft == "platform":
            from benchmarks.fine_tune_platform import cpu_per_ktoken, cpu_table

            print("\nCPU seconds (share of one core) over each platform job's training window "
                  "(first to last `step` log line):")
            print(cpu_table(results["weft"]))
            platform_cores = [sum(v for k, v in m["cpu"].items() if k != "flow-run") / m["window"]
                              for m in results["weft"]]
            print(f"  everything but the flow-run process: median {statistics.median(platform_cores):.2f} cores "
                  f"while training")
            print("  training CPU seconds per 1000 tokens: "
                  f"flow-run process {statistics.median(cpu_per_ktoken(m) for m in results['weft']):.3f}, "
                  f"plain script {statistics.median(cpu_per_ktoken(m) for m in results['plain']):.3f}")
        med = {k: statistics.median(tokens_per_second(m) for m in v) for k, v in results.items()}
        overhead = med["plain"] / med["weft"] - 1
        print(f"\nmedian tokens/s: weft {med['weft']:.0f}, plain {med['plain']:.0f}; "
              f"weft/plain = {med['weft'] / med['plain']:.3f} (weft costs {overhead:+.1%} time per token; goal "
              f"{'weft/plain >= 0.90' if args.weft == 'platform' else '< 5%'})")
        same = {m["train_tokens"] for v in results.values() for m in v}
        if len(same) > 1:
            print(f"note: trained token counts differ between runs: {sorted(same)}")
        return 0
    finally:
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
