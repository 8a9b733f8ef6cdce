"""Fine-tune tasks: resolve inputs, prepare records (cached on dataset + tokenizer + template),
pre-flight estimate, train with storage checkpoints (a re-run resumes), register the results."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from tasks.common import step_options, wait_for_dataset
from weft import hardware
from weft.clock import utcnow
from weft.datasets.formats import iter_batches
from weft.db import session_scope
from weft.ids import adapter_id_of, finetuned_model_id_of
from weft.scan.checks import SAFE
from weft.scan.report import adapter_scan
from weft.specs.export import ExportOptions
from weft.specs.training import FineTuneSpec
from weft.statuses import ModelStatus
from weft.storage import get_storage
from weft.tables import Adapter, Dataset, Model
from weft.tracking import tracked_run
from weft.training.checkpoints import CheckpointStore
from weft.training.progress import format_line, loss_curve_png, summary_markdown
from weft.training.records import training_record
from weft.training.trainer import train
from weft.webhooks.outbox import model_created

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


class Inputs(BaseModel):
    base_model_id: str
    base_name: str
    model_key: str
    details: dict[str, Any]
    dataset_id: str
    dataset_key: str
    file_type: str
    dataset_fingerprint: str
    tokenizer_fingerprint: str  # part of prepare_dataset's cache key: another tokenizer, another cache


class Prepared(BaseModel):
    key: str
    records: int
    format: str


@task(**step_options("resolve_inputs"))
def resolve_inputs(spec: FineTuneSpec) -> Inputs:
    wait_for_dataset(spec.dataset_id)
    with session_scope() as s:
        model, ds = s.get(Model, spec.base_model), s.get(Dataset, spec.dataset_id)
        if model is None or not model.storage_uri:
            raise ValueError(f"base model {spec.base_model} has no stored weights")
        key = f"models/{model.id}"
        with get_storage().local(key) as folder:
            digest = hashlib.sha256()
            for name in TOKENIZER_FILES:
                if (folder / name).exists():
                    digest.update(name.encode() + (folder / name).read_bytes())
        inputs = Inputs(base_model_id=model.id, base_name=model.name, model_key=key, details=model.details or {},
                        dataset_id=ds.id, dataset_key=ds.storage_key, file_type=ds.file_type,
                        dataset_fingerprint=ds.fingerprint, tokenizer_fingerprint=digest.hexdigest())
    get_run_logger().info("base %s, dataset %s (sha256 %s)", inputs.base_name, ds.name, inputs.dataset_fingerprint[:12])
    return inputs


@task(**step_options("prepare_dataset"))
def prepare_dataset(inputs: Inputs, workflow_id: str) -> Prepared:
    """Records normalised for the trainer, stored next to the run."""
    storage = get_storage()
    key = f"runs/{workflow_id}/train-{inputs.dataset_fingerprint[:12]}-{inputs.tokenizer_fingerprint[:12]}.jsonl"
    count, fmt = 0, None
    with tempfile.TemporaryDirectory() as tmp, storage.local(inputs.dataset_key) as source:
        out = Path(tmp) / "train.jsonl"
        with out.open("w") as fh:
            for batch in iter_batches(source, inputs.file_type):
                for record in batch.to_pylist():
                    row = training_record(record)
                    fmt = fmt or next(iter(row))
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    count += 1
        with out.open("rb") as fh:
            storage.write_stream(key, fh)
    get_run_logger().info("prepared %d %s records", count, fmt)
    return Prepared(key=key, records=count, format=fmt or "empty")


class Estimate(BaseModel):
    steps: int
    memory_gb: float
    available_gb: float
    device: str


@task(**step_options("preflight"))
def preflight(inputs: Inputs, prepared: Prepared, spec: FineTuneSpec) -> Estimate:
    """Steps and memory for this config; refuse with the numbers when the model cannot fit."""
    import torch

    c = spec.config
    per_step = c.batch_size * c.gradient_accumulation_steps
    steps = c.max_steps or math.ceil(math.ceil(prepared.records * (1 - c.validation_split)) / per_step * c.num_epochs)
    d = inputs.details
    est = hardware.estimate(d.get("parameter_count", 0), num_layers=d.get("num_layers"),
                            hidden_size=d.get("hidden_size"), num_attention_heads=d.get("num_attention_heads"),
                            num_key_value_heads=d.get("num_key_value_heads"),
                            context_length=min(c.max_seq_length, d.get("context_length") or c.max_seq_length))
    need = est.train_qlora_gb if c.method == "qlora" else est.train_lora_gb
    if torch.cuda.is_available():
        device, available = torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory / 1e9
    else:
        device, available = "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    if need > available:
        raise ValueError(f"{inputs.base_name} needs ~{need:.1f} GB to train with {c.method} but {device} has "
                         f"{available:.1f} GB: use qlora, a smaller max_seq_length or a bigger machine")
    get_run_logger().info("%d steps, ~%.2f GB of %.1f GB on %s", steps, need, available, device)
    return Estimate(steps=steps, memory_gb=need, available_gb=available, device=device)


class Trained(BaseModel):
    method: str
    fallback_reason: str | None
    resumed_from_step: int | None
    global_step: int
    metrics: dict[str, float]
    adapter_key: str
    sha256: str
    size_bytes: int
    scan: dict[str, Any] | None = None  # the adapter's scan (None from a run cached before weft scanned them)


# Under log_prints, datasets' function hashing ends up disassembling code into the run's logs.
@task(**step_options("train_adapter", log_prints=False))
def train_adapter(inputs: Inputs, prepared: Prepared, estimate: Estimate, spec: FineTuneSpec,
                  workflow_id: str, owner_id: str | None = None) -> Trained:
    """Train, mirroring checkpoints to storage; a re-run of the workflow resumes from the last one (and continues
    its tracked run, when the config names an experiment tracker)."""
    log = get_run_logger()
    storage = get_storage()
    progress = create_progress_artifact(0.0, description=f"training {spec.name}")

    def on_log(line: dict[str, Any]) -> None:
        log.info(format_line(line))
        update_progress_artifact(progress, min(100.0, 100 * line["step"] / max(1, line.get("max_steps") or estimate.steps)))

    rows = [json.loads(line) for line in storage.read_bytes(prepared.key).splitlines() if line.strip()]
    checkpoints = CheckpointStore(storage, f"runs/{workflow_id}/checkpoints")
    if complete := checkpoints.steps():
        log.info("resuming from checkpoint-%d, the last complete checkpoint in storage", complete[-1])
    tracked = tracked_run(spec.experiment_tracker, workflow_id, owner_id or "", spec.project_name, spec.name,
                          {**spec.config.model_dump(), "base_model": inputs.base_name, "base_model_id": inputs.base_model_id,
                           "dataset_id": inputs.dataset_id, "dataset_sha256": inputs.dataset_fingerprint,
                           "dataset_records": prepared.records})
    with tempfile.TemporaryDirectory() as tmp, storage.local(inputs.model_key) as base, tracked as tracker:
        result = train(base, rows, spec.config, Path(tmp) / "work", checkpoints, callbacks=tracker.callbacks,
                       on_log=on_log)
        if result.fallback_reason:
            log.warning("qlora fell back to lora: %s", result.fallback_reason)
        metrics = dict(result.metrics)
        if result.resumed_from_step is not None:
            metrics["resumed_from_step"] = float(result.resumed_from_step)
        adapter = Path(result.adapter_dir)
        png = loss_curve_png(result.log_history)
        (adapter / "loss_curve.png").write_bytes(png)
        tracker.log_outputs(adapter, metrics, {"weft.trained_method": result.method})
        create_markdown_artifact(summary_markdown(spec.name, result.method, metrics, png, result.fallback_reason,
                                                  result.resumed_from_step),
                                 key=f"fine-tune-{workflow_id[:8]}", description="final metrics and loss curve")
        log.info("trained %d steps: %s", result.global_step,
                 " ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items())))
        key = f"runs/{workflow_id}/adapter"
        size = storage.put_dir(adapter, key)
        weights = adapter / "adapter_model.safetensors"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        scan = adapter_scan(weights, weights.name, digest)
    update_progress_artifact(progress, 100.0)
    return Trained(method=result.method, fallback_reason=result.fallback_reason,
                   resumed_from_step=result.resumed_from_step, global_step=result.global_step,
                   metrics=metrics, adapter_key=key, sha256=digest, size_bytes=size, scan=scan.model_dump())


@task(**step_options("register_adapter"))
def register_adapter(inputs: Inputs, trained: Trained, spec: FineTuneSpec, workflow_id: str, owner_id: str) -> str:
    """The adapter (with lineage) and the fine-tuned model that is base + adapter; returns the model id."""
    storage = get_storage()
    adapter_id, model_id = adapter_id_of(workflow_id), finetuned_model_id_of(workflow_id)
    key = f"adapters/{adapter_id}"
    if storage.exists(trained.adapter_key):  # already moved when this step ran before
        storage.move(trained.adapter_key, key)
    with session_scope() as s:
        s.merge(Adapter(id=adapter_id, user_id=owner_id, name=spec.name, base_model_id=inputs.base_model_id,
                        dataset_id=inputs.dataset_id, dataset_fingerprint=inputs.dataset_fingerprint,
                        model_id=model_id, workflow_id=workflow_id, method=trained.method,
                        config=spec.config.model_dump(), metrics=trained.metrics, storage_key=key,
                        size_bytes=trained.size_bytes, sha256=trained.sha256))
        s.merge(Model(id=model_id, user_id=owner_id, workflow_id=workflow_id, name=spec.name, type="fine-tuned",
                      provider_type="adapter", base_model=inputs.base_name, status=ModelStatus.ACTIVE,
                      storage_uri=storage.url(key), metrics=trained.metrics,
                      details={"base_model_id": inputs.base_model_id, "adapter_id": adapter_id,
                               "dataset_id": inputs.dataset_id, **inputs.details},
                      parameters={"model_size": (inputs.details or {}).get("parameter_count") and
                                  hardware.human_size(inputs.details["parameter_count"]),
                                  "quantization": "nf4" if trained.method == "qlora" else None,
                                  "adapter_type": trained.method},
                      scan=trained.scan, scan_verified=bool(trained.scan and trained.scan["status"] == SAFE),
                      updated_at=utcnow()))
        model_created(s, model_id, spec.name, "fine-tuned", workflow_id, owner_id)
    get_run_logger().info("registered adapter %s and fine-tuned model %s", adapter_id, model_id)
    return model_id


@task(**step_options("start_export"))
def start_export(model_id: str, options: ExportOptions, owner_id: str) -> str:
    """Start the export_model workflow the job config asked for (its own workflow: retried on its own); returns
    its id."""
    from weft.registry import exports

    with session_scope() as s:
        started = exports.start(s, owner_id, s.get(Model, model_id), options)
    get_run_logger().info("started export workflow %s (%s)%s", started["workflow_id"], started["message"],
                          f": {started['warning']}" if started["warning"] else "")
    return started["workflow_id"]
