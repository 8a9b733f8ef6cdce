"""Evaluate tasks: resolve the models and test set, answer it with base and fine-tuned, check the
adapter has an effect, run lm-eval benchmarks, then score, bound the improvement and gate promotion."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from tasks.common import step_options, wait_for_dataset
from weft.clock import utcnow
from weft.datasets.formats import iter_batches
from weft.db import session_scope
from weft.evaluation import report, scoring
from weft.evaluation.generation import Answers, Decoding, base_and_tuned
from weft.specs.evaluation import EvaluateSpec
from weft.statuses import RunStatus
from weft.storage import get_storage
from weft.tables import Adapter, Dataset, Evaluation, Model
from weft.training.records import Example, example_of, training_record


class EvalInputs(BaseModel):
    model_id: str
    model_name: str
    base_model_id: str
    base_name: str
    base_key: str
    adapter_key: str | None  # base + adapter; None: a full model at tuned_key
    adapter_sha256: str | None
    tuned_key: str | None
    dataset_key: str
    file_type: str
    dataset_fingerprint: str
    held_out: tuple[float, int] | None  # (validation_split, seed) of the training run on this dataset


@task(**step_options("resolve_evaluation"))
def resolve_evaluation(spec: EvaluateSpec, evaluation_id: str, owner_id: str) -> EvalInputs:
    wait_for_dataset(spec.dataset_id)
    with session_scope() as s:
        model, ds = s.get(Model, spec.model_id), s.get(Dataset, spec.dataset_id)
        adapter = s.get(Adapter, model.details.get("adapter_id")) if model.provider_type == "adapter" else None
        base = s.get(Model, spec.base_model_id or (adapter.base_model_id if adapter else ""))
        if base is None or not base.storage_uri:
            raise ValueError(f"the base model of {model.name} is gone from the registry")
        held_out = None
        if adapter and adapter.dataset_id == ds.id and adapter.config.get("validation_split", 0) > 0:
            held_out = (adapter.config["validation_split"], adapter.config.get("seed", 42))
        inputs = EvalInputs(model_id=model.id, model_name=model.name, base_model_id=base.id, base_name=base.name,
                            base_key=f"models/{base.id}", adapter_key=adapter.storage_key if adapter else None,
                            adapter_sha256=adapter.sha256 if adapter else None,
                            tuned_key=None if adapter else f"models/{model.id}", dataset_key=ds.storage_key,
                            file_type=ds.file_type, dataset_fingerprint=ds.fingerprint, held_out=held_out)
        row = s.get(Evaluation, evaluation_id) or Evaluation(id=evaluation_id, user_id=owner_id, model_id=model.id)
        row.base_model_id, row.dataset_id, row.test_set_path = base.id, ds.id, spec.test_set_path
        row.base_model_name, row.fine_tuned_name = base.name, model.name
        row.status, row.started_at, row.updated_at = RunStatus.RUNNING, row.started_at or utcnow(), utcnow()
        s.add(row)
    get_run_logger().info("evaluating %s against %s on dataset %s%s", inputs.model_name, inputs.base_name, ds.name,
                          " (its held-out split)" if held_out else "")
    return inputs


@task(**step_options("load_test_set"))
def load_test_set(inputs: EvalInputs, max_examples: int) -> list[Example]:
    """The test examples: the dataset (or the split the training run held out of it), in file order."""
    records: list[dict[str, Any]] = []
    with get_storage().local(inputs.dataset_key) as source:
        for batch in iter_batches(source, inputs.file_type):
            records += batch.to_pylist()
    if inputs.held_out:  # the very split the trainer made of the same rows
        from datasets import Dataset as HFDataset

        rows = [training_record(r) for r in records]
        split = HFDataset.from_list(rows).train_test_split(test_size=inputs.held_out[0], seed=inputs.held_out[1])
        records = list(split["test"])
    examples = [example_of(r) for r in records][:max_examples]
    if not examples:
        raise ValueError("the test set is empty")
    get_run_logger().info("%d test examples", len(examples))
    return examples


class Compared(BaseModel):
    base: Answers
    tuned: Answers


# Under log_prints, library prints (datasets' code hashing) would flood the run's logs.
@task(**step_options("compare_outputs", log_prints=False))
def compare_outputs(inputs: EvalInputs, examples: list[Example], max_new_tokens: int) -> Compared:
    """Both models answer every prompt with the same chat template and greedy decoding."""
    storage = get_storage()
    with ExitStack() as stack:
        base_dir = stack.enter_context(storage.local(inputs.base_key))
        adapter_dir = stack.enter_context(storage.local(inputs.adapter_key)) if inputs.adapter_key else None
        tuned_dir = stack.enter_context(storage.local(inputs.tuned_key)) if inputs.tuned_key else None
        base, tuned = base_and_tuned(base_dir, adapter_dir, tuned_dir, examples, Decoding(max_new_tokens=max_new_tokens))
    get_run_logger().info("answered %d prompts twice: %.0f ms (base) / %.0f ms (fine-tuned) on average",
                          len(examples), sum(base.times_ms) / len(examples), sum(tuned.times_ms) / len(examples))
    return Compared(base=base, tuned=tuned)


@task(**step_options("check_adapter_effect"))
def check_adapter_effect(inputs: EvalInputs, compared: Compared) -> int:
    """Fail when the fine-tuned model answers exactly like the base: an adapter that was not applied
    (or has all-zero weights) would otherwise pass as 'no improvement'. Returns the changed answers."""
    changed = sum(b != t for b, t in zip(compared.base.outputs, compared.tuned.outputs))
    if changed == 0:
        detail = ""
        if inputs.adapter_key:
            with get_storage().local(inputs.adapter_key) as adapter_dir:
                detail = report.zero_adapter_reason(Path(adapter_dir)) or ""
        raise ValueError(f"the fine-tuned model gave the base model's answer to all {len(compared.base.outputs)} "
                         f"prompts: the adapter has no effect{': ' + detail if detail else ''}")
    get_run_logger().info("the adapter changed %d of %d answers", changed, len(compared.base.outputs))
    return changed


@task(**step_options("run_benchmarks", log_prints=False))
def run_benchmarks(inputs: EvalInputs, benchmarks: list[str], limit: int | None) -> list[dict[str, Any]]:
    """lm-eval tasks on the base and the fine-tuned model: per task and metric, both scores and the delta."""
    if not benchmarks:
        return []
    from weft.evaluation.harness import compare_harness, run_harness

    storage = get_storage()
    with ExitStack() as stack:
        base_dir = stack.enter_context(storage.local(inputs.base_key))
        base = run_harness(base_dir, None, benchmarks, limit=limit)
        if inputs.adapter_key:
            tuned = run_harness(base_dir, stack.enter_context(storage.local(inputs.adapter_key)), benchmarks, limit=limit)
        else:
            tuned = run_harness(stack.enter_context(storage.local(inputs.tuned_key)), None, benchmarks, limit=limit)
    rows = compare_harness(base, tuned)
    get_run_logger().info("benchmarks: %s", json.dumps(rows))
    return rows


@task(**step_options("score_and_gate"))
def score_and_gate(inputs: EvalInputs, examples: list[Example], compared: Compared, benchmarks: list[dict[str, Any]],
                   spec: EvaluateSpec, evaluation_id: str) -> bool:
    """Metrics, per-example winners, the improvement's confidence interval and the promotion decision,
    stored on the evaluation (and the model) and published as a markdown artifact."""
    outcome = scoring.score(examples, compared.base, compared.tuned, confidence=spec.confidence)
    gate = scoring.promotion_gate(outcome.interval, benchmarks, min_improvement=spec.min_improvement,
                                  max_regression=spec.max_regression)
    with session_scope() as s:
        row = s.get(Evaluation, evaluation_id)
        row.results, row.examples = outcome.results, outcome.examples
        row.benchmarks, row.gate, row.promoted = benchmarks, gate.model_dump(), gate.promoted
        row.status, row.error, row.completed_at, row.updated_at = RunStatus.COMPLETED, None, utcnow(), utcnow()
        model = s.get(Model, inputs.model_id)
        model.promoted, model.updated_at = gate.promoted, utcnow()
        s.add(row)
        s.add(model)
    create_markdown_artifact(report.markdown(inputs.model_name, inputs.base_name, outcome, benchmarks, gate),
                             key=f"evaluation-{evaluation_id[:8]}", description="base vs fine-tuned")
    get_run_logger().info("%s: %s", "promoted" if gate.promoted else "not promoted", gate.reason)
    return gate.promoted
