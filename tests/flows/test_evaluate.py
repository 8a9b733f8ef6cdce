"""Evaluation: scoring and the bootstrap gate, then the evaluate_model flow on the tiny model
fine-tuned on a fixed mapping it cannot know before (and on an adapter that changes nothing)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.helpers.records import mapping_records
from weft.evaluation import scoring
from weft.evaluation.generation import Answers
from weft.training.records import Example


def test_scores_have_document_002_shape_and_a_bootstrap_interval():
    examples = [Example(messages=[{"role": "user", "content": f"q{i}"}], expected=["brakes", "oil"][i % 2])
                for i in range(40)]
    base = Answers(outputs=["oil"] * 40, times_ms=[10.0] * 40)
    tuned = Answers(outputs=[e.expected if i < 36 else "??" for i, e in enumerate(examples)], times_ms=[12.0] * 40)
    outcome = scoring.score(examples, base, tuned)
    r = outcome.results
    assert r["task"] == "classification" and r["base_model"]["accuracy"] == 0.5 and r["fine_tuned"]["accuracy"] == 0.9
    assert {"accuracy", "f1_score", "precision", "recall", "avg_response_time_ms"} <= set(r["fine_tuned"])
    assert r["improvement"]["accuracy_delta"] == "+80.0%"
    ci = outcome.interval
    assert ci.mean == pytest.approx(0.4) and 0 < ci.low < ci.mean < ci.high
    assert outcome.examples[0]["winner"] == "fine_tuned" and outcome.examples[1]["winner"] == "tie"
    assert set(outcome.examples[0]) == {"input", "expected", "base_model_output", "base_model_correct",
                                        "fine_tuned_output", "fine_tuned_correct", "winner"}
    assert scoring.promotion_gate(ci, [], min_improvement=0.0, max_regression=0.05).promoted
    regress = [{"task": "weft_general_qa", "metric": "acc", "base": 0.5, "tuned": 0.3, "delta": -0.2}]
    gate = scoring.promotion_gate(ci, regress, min_improvement=0.0, max_regression=0.05)
    assert not gate.promoted and "weft_general_qa acc fell by 0.200" in gate.reason
    same = scoring.paired_bootstrap([1.0, 0.0] * 10, [1.0, 0.0] * 10, metric="accuracy")
    assert not scoring.promotion_gate(same, [], min_improvement=0.0, max_regression=0.05).promoted


def test_generation_task_uses_exact_match_and_rouge():
    examples = [Example(messages=[{"role": "user", "content": f"q{i}"}], expected=f"answer number {i}") for i in range(6)]
    outcome = scoring.score(examples, Answers(outputs=["no"] * 6, times_ms=[1.0] * 6),
                            Answers(outputs=[f"answer number {i}" for i in range(6)], times_ms=[1.0] * 6))
    assert outcome.results["task"] == "generation" and "f1_score" not in outcome.results["fine_tuned"]
    assert outcome.results["fine_tuned"]["rouge_l"] == 1.0 and outcome.results["base_model"]["rouge_l"] == 0.0


@pytest.fixture(scope="module")
def registry(prefect_server, db, tiny_model_dir: Path):
    """A user, the tiny base model and the mapping datasets, registered."""
    from weft.testing.registry import register_dataset, register_model, register_user

    user_id = register_user()
    return {"user": user_id, "base": register_model(user_id, tiny_model_dir),
            "train": register_dataset(user_id, "mapping-train", mapping_records(96)),
            "test": register_dataset(user_id, "mapping-test", mapping_records(24))}


def evaluate(registry, model_id: str, **settings):
    from flows.evaluate_model import evaluate_model
    from weft.specs.evaluation import EvaluateSpec

    spec = EvaluateSpec(**{"model_id": model_id, "dataset_id": registry["test"], "max_new_tokens": 8, "benchmarks": [],
                           **settings})
    return evaluate_model(spec=spec, owner_id=registry["user"], return_state=True)


def test_fine_tuned_mapping_improves_and_is_promoted(registry):
    from flows.fine_tune import fine_tune
    from weft.db import session_scope
    from weft.specs.training import FineTuneSpec
    from weft.tables import Evaluation, Model
    from weft.training.config import TrainConfig

    trained = fine_tune(spec=FineTuneSpec(base_model=registry["base"], dataset_id=registry["train"], name="mapper",
                                          config=TrainConfig(rank=8, alpha=16, batch_size=8, max_steps=60,
                                                             learning_rate=1e-2, max_seq_length=64,
                                                             checkpoint_steps=60)),
                        owner_id=registry["user"], return_state=True)
    assert trained.is_completed(), trained.message
    # a random-weight model's general-QA score moves by chance: the limit is lifted, the rows are checked
    state = evaluate(registry, trained.result(), benchmarks=["weft_general_qa"], benchmark_limit=10, max_regression=1.0)
    assert state.is_completed(), state.message
    with session_scope() as s:
        row = s.get(Evaluation, str(state.state_details.flow_run_id))
        model = s.get(Model, trained.result())
    r = row.results
    assert row.status == "completed" and r["task"] == "classification" and r["examples_count"] == 24
    assert r["fine_tuned"]["accuracy"] > r["base_model"]["accuracy"] + 0.3
    assert r["improvement"]["confidence_interval"]["low"] > 0
    assert row.promoted and model.promoted and row.gate["promoted"]
    assert len(row.examples) == 24 and any(e["winner"] == "fine_tuned" for e in row.examples)
    acc = next(b for b in row.benchmarks if b["task"] == "weft_general_qa" and b["metric"] == "acc")
    assert 0 <= acc["base"] <= 1 and 0 <= acc["tuned"] <= 1 and acc["delta"] == acc["tuned"] - acc["base"]


def test_an_adapter_that_changes_nothing_fails_the_sanity_check(registry, tiny_model_dir: Path, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from weft.db import session_scope
    from weft.storage import get_storage
    from weft.tables import Adapter, Model

    untrained = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    untrained.save_pretrained(tmp_path / "zero")
    adapter = Adapter(user_id=registry["user"], name="zero", base_model_id=registry["base"], method="lora",
                      storage_key=f"adapters/{uuid.uuid4().hex}")
    get_storage().put_dir(tmp_path / "zero", adapter.storage_key)
    model = Model(user_id=registry["user"], name="zero tuned", type="fine-tuned", provider_type="adapter",
                  storage_uri=get_storage().url(adapter.storage_key), details={"adapter_id": adapter.id})
    adapter.model_id = model.id
    with session_scope() as s:
        s.add(adapter)
        s.add(model)
    state = evaluate(registry, model.id)
    assert state.is_failed()
    assert "adapter has no effect" in state.message or "adapter has no effect" in str(state.result(raise_on_failure=False))
    assert "lora_B" in str(state.result(raise_on_failure=False))
