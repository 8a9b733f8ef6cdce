"""Offline lm-eval benchmarks over the project's task YAMLs: base model vs base + LoRA adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from weft.evaluation import harness
from weft.evaluation.harness import (
    PROJECT_TASKS_DIR,
    TaskScores,
    compare_harness,
    project_tasks,
    run_harness,
    stage_task_dirs,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """A LoRA adapter with random A and B (init_lora_weights=False), so it changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    out = tmp_path_factory.mktemp("adapter") / "lora"
    get_peft_model(model, config).save_pretrained(out)
    return out


def test_project_tasks_and_data():
    assert project_tasks() == ["weft_arith", "weft_general_qa"]
    qa = [json.loads(line) for line in (PROJECT_TASKS_DIR / "data" / "general_qa.jsonl").read_text().splitlines()]
    assert len(qa) >= 40 and all(len(r["choices"]) == 4 and 0 <= r["answer"] < 4 for r in qa)
    arith = [json.loads(line) for line in (PROJECT_TASKS_DIR / "data" / "arith.jsonl").read_text().splitlines()]
    assert len(arith) >= 30
    for r in arith:  # "What is a op b?" -> the right number
        a, op, b = r["question"].removeprefix("What is ").rstrip("?").split()
        assert str(eval(f"{int(a)} {op} {int(b)}")) == r["answer"]


def test_stage_rewrites_data_files_to_absolute(tmp_path: Path):
    (staged,) = stage_task_dirs([PROJECT_TASKS_DIR], tmp_path)
    for name in ("weft_general_qa", "weft_arith"):
        config = yaml.safe_load((staged / f"{name}.yaml").read_text())
        path = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert path.is_absolute() and path.is_file(), path
        assert config["tag"] == ["weft"]
    assert yaml.safe_load((staged / "weft_arith.yaml").read_text())["generation_kwargs"]["until"] == ["\n"]


def test_hub_offline_is_restored(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    with harness._hub_offline():
        assert os.environ["HF_DATASETS_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert "HF_DATASETS_OFFLINE" not in os.environ
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before


def test_unknown_task_names_available(tiny_model_dir: Path):
    with pytest.raises(ValueError, match="weft_general_qa") as err:
        run_harness(tiny_model_dir, None, ["weft_general_qa", "no_such_task"])
    assert "no_such_task" in str(err.value) and "weft_arith" in str(err.value)


def _check(scores: list[TaskScores]) -> dict[str, dict[str, float]]:
    by_task = {s.task: s.metrics for s in scores}
    assert set(by_task) == {"weft_general_qa", "weft_arith"}
    for name in ("acc", "acc_norm"):
        assert 0.0 <= by_task["weft_general_qa"][name] <= 1.0
    assert 0.0 <= by_task["weft_arith"]["exact_match"] <= 1.0
    assert "acc_stderr" in by_task["weft_general_qa"]
    assert not any("," in m for metrics in by_task.values() for m in metrics)
    assert all(s.samples == 10 for s in scores)
    return by_task


def test_base_and_adapter_offline(tiny_model_dir: Path, lora_dir: Path, monkeypatch):
    import torch
    from peft import PeftModel

    base = run_harness(tiny_model_dir, None, ["weft"], limit=10)
    base_by = _check(base)

    # Spy on how lm-eval loads the adapter: PeftModel.from_pretrained must be called with our folder,
    # and the model it yields must answer differently from the base model.
    loaded = []
    original = PeftModel.from_pretrained

    def spy(model, model_id, *args, **kwargs):
        peft_model = original(model, model_id, *args, **kwargs)
        loaded.append((str(model_id), peft_model))
        return peft_model

    monkeypatch.setattr(PeftModel, "from_pretrained", spy)
    tuned = run_harness(tiny_model_dir, lora_dir, ["weft_general_qa", "weft_arith"], limit=10)
    _check(tuned)
    assert [t.task for t in tuned] == ["weft_general_qa", "weft_arith"]  # the order asked for
    assert len(loaded) == 1 and Path(loaded[0][0]) == lora_dir.resolve()

    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[0, 5, 17, 42, 99, 7]])
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        delta = (loaded[0][1](ids).logits - plain(ids).logits).abs().max().item()
    assert delta > 1e-3

    rows = compare_harness(base, tuned)
    assert {(r["task"], r["metric"]) for r in rows} == {
        ("weft_general_qa", "acc"), ("weft_general_qa", "acc_norm"), ("weft_arith", "exact_match")}
    for r in rows:
        assert r["delta"] == pytest.approx(r["tuned"] - r["base"])
        assert r["base"] == base_by[r["task"]][r["metric"]]


def test_compare_harness_missing_metric():
    rows = compare_harness([TaskScores(task="t", metrics={"acc": 0.5, "acc_stderr": 0.1})],
                           [TaskScores(task="t", metrics={"acc": 0.75, "f1": 0.2})])
    assert rows == [{"task": "t", "metric": "acc", "base": 0.5, "tuned": 0.75, "delta": 0.25},
                    {"task": "t", "metric": "f1", "base": None, "tuned": 0.2, "delta": None}]


def test_extra_task_dir(tiny_model_dir: Path, tmp_path: Path):
    """A task folder outside the project, its data given relative to the YAML, runs from any CWD."""
    folder = tmp_path / "mytasks"
    (folder / "data").mkdir(parents=True)
    rows = [{"q": "Is water wet?", "choices": ["yes", "no"], "label": 0},
            {"q": "Is fire cold?", "choices": ["yes", "no"], "label": 1},
            {"q": "Two plus two?", "choices": ["four", "five"], "label": 0}]
    (folder / "data" / "yn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "yn.yaml").write_text(yaml.safe_dump({
        "task": "my_yes_no", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "data/yn.jsonl"}},
        "output_type": "multiple_choice", "test_split": "test", "doc_to_text": "{{q}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}", "metric_list": [{"metric": "acc"}]}))
    (scores,) = run_harness(tiny_model_dir, None, ["my_yes_no"], extra_task_dirs=[folder])
    assert scores.task == "my_yes_no" and scores.samples == 3 and scores.metrics["acc"] in (0.0, 1 / 3, 2 / 3, 1.0)
