"""Evaluate a fine-tuned model against its base: test-set comparison, lm-eval benchmarks, promotion gate."""

from __future__ import annotations

from prefect import flow

from flows import names
from flows.common import workflow_ref
from tasks.evaluation import (
    check_adapter_effect,
    compare_outputs,
    load_test_set,
    resolve_evaluation,
    run_benchmarks,
    score_and_gate,
)
from weft.specs.evaluation import EvaluateSpec
from weft.specs.names import WorkflowName
from weft.tables import Model


@flow(name=WorkflowName.EVALUATE_MODEL.value, log_prints=True,
      flow_run_name=names.run_name(names.spec("model_id", Model), names.workflow()))
def evaluate_model(spec: EvaluateSpec, workflow_id: str | None = None, cache_version: int = 0,
                   owner_id: str | None = None) -> bool:
    """Resolve → load test set → answer with both models → adapter-effect check → benchmarks → score and gate."""
    ref = workflow_ref(WorkflowName.EVALUATE_MODEL, spec, workflow_id, owner_id)
    inputs = resolve_evaluation(spec, ref.workflow_id, ref.owner_id)
    examples = load_test_set(inputs, spec.max_examples)
    compared = compare_outputs(inputs, examples, spec.max_new_tokens)
    check_adapter_effect(inputs, compared)
    benchmarks = run_benchmarks(inputs, spec.benchmarks, spec.benchmark_limit)
    return score_and_gate(inputs, examples, compared, benchmarks, spec, ref.workflow_id)
