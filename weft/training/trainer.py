"""One fine-tuning run: a peft adapter (LoRA, DoRA or QLoRA) trained with trl's SFTTrainer, every
checkpoint mirrored to storage, resumed from the latest complete one."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from weft.training.checkpoints import CheckpointStore
from weft.training.config import TrainConfig

log = logging.getLogger(__name__)


class TrainResult(BaseModel):
    method: str  # the method that ran (qlora falls back to lora where 4-bit is unavailable)
    fallback_reason: str | None
    resumed_from_step: int | None
    global_step: int
    train_loss: float | None
    metrics: dict[str, float]
    log_history: list[dict[str, Any]]
    adapter_dir: str


def four_bit_unavailable() -> str | None:
    """Why bitsandbytes 4-bit cannot be used here, or None when it can."""
    try:
        importlib.import_module("bitsandbytes")
    except Exception as exc:  # not installed, or installed without a usable backend
        return f"bitsandbytes is unavailable ({type(exc).__name__}: {exc})"
    return None


def load_base(model_dir: Path, config: TrainConfig) -> tuple[Any, str, str | None]:
    """The base model, the method that will run and the reason for any fallback."""
    import torch
    from transformers import AutoModelForCausalLM

    if config.method == "qlora":
        reason = four_bit_unavailable()
        if reason is None:
            from transformers import BitsAndBytesConfig

            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available()
                                       else torch.float32)
            model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant)
            import bitsandbytes as bnb

            for module in model.modules():  # AVX512-BF16 CPUs otherwise zero the gradients after any eval
                if isinstance(module, bnb.nn.Linear4bit):
                    module.support_avx512bf16_for_cpu = False
            return model, "qlora", None
        log.warning("qlora falls back to lora: %s", reason)
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), "lora", reason
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), config.method, None


def train(model_dir: Path, rows: list[dict[str, Any]], config: TrainConfig, work_dir: Path,
          checkpoints: CheckpointStore, callbacks: list[Any] | None = None,
          on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train an adapter on `rows` (chat `messages` or `prompt`/`completion` records)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    model, method, reason = load_base(model_dir, config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = Dataset.from_list(rows)
    splits = data.train_test_split(test_size=config.validation_split, seed=config.seed) \
        if config.validation_split > 0 and len(data) >= 10 else {"train": data}

    class Mirror(TrainerCallback):
        """Uploads each checkpoint (then its completion marker) and forwards log lines with
        throughput and ETA measured since this process started training (a resume included)."""

        started: tuple[float, int] | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.started is None:
                self.started = (time.monotonic(), state.global_step)

        def on_save(self, args, state, control, **kwargs):
            checkpoints.upload(Path(args.output_dir) / f"checkpoint-{state.global_step}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not (on_log and logs) or self.started is None or not {"loss", "eval_loss"} & set(logs):
                return  # the end-of-training summary comes back as metrics instead
            elapsed, done = time.monotonic() - self.started[0], state.global_step - self.started[1]
            line = {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch, **logs}
            if "num_tokens" in logs and elapsed > 0:
                line["tokens_per_second"] = logs["num_tokens"] / elapsed
            if done > 0:
                line["eta_seconds"] = elapsed / done * (state.max_steps - state.global_step)
            on_log(line)

    args = SFTConfig(
        output_dir=str(work_dir / "trainer"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs, max_steps=config.max_steps or -1, warmup_steps=config.warmup_steps,
        save_strategy="steps", save_steps=config.checkpoint_steps, logging_steps=config.logging_steps,
        eval_strategy="steps" if "test" in splits else "no", eval_steps=config.checkpoint_steps,
        activation_checkpointing=False,  # trl turns it on by default: on CPU it halves the speed
        bf16=False, fp16=False, use_cpu=not torch.cuda.is_available(), report_to=[], seed=config.seed,
        max_length=config.max_seq_length, save_only_model=False, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                             target_modules=config.target_modules, use_dora=method == "dora", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=splits["train"], eval_dataset=splits.get("test"),
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[Mirror(), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)  # log lines go through on_log, not stdout
    resume = checkpoints.download_latest(work_dir / "resume")
    resumed_from = int(resume.name.split("-")[1]) if resume else None
    if resume:
        log.info("resuming from %s", resume.name)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    adapter_dir = work_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    metrics = {k: float(v) for k, v in output.metrics.items() if isinstance(v, (int, float))}
    tokens = getattr(trainer, "_total_train_tokens", 0)  # trl's count of tokens trained in this process
    metrics["train_tokens"] = float(tokens)
    if metrics.get("train_runtime"):
        metrics["train_tokens_per_second"] = tokens / metrics["train_runtime"]
    metrics["global_step"] = float(trainer.state.global_step)
    if "test" in splits:
        metrics.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    return TrainResult(method=method, fallback_reason=reason, resumed_from_step=resumed_from,
                       global_step=trainer.state.global_step, train_loss=metrics.get("train_loss"),
                       metrics=metrics, log_history=trainer.state.log_history, adapter_dir=str(adapter_dir))
