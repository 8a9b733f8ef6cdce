"""Fine-tuning core on the tiny model: LoRA/DoRA adapters, QLoRA fallback, storage checkpoints, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from weft.storage import Storage
from weft.training.checkpoints import CheckpointStore
from weft.training.config import TrainConfig
from weft.training.trainer import train

ROWS = [{"messages": [{"role": "user", "content": f"code {i}?"}, {"role": "assistant", "content": f"part {i % 5}"}]}
        for i in range(32)]


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"rank": 4, "alpha": 8, "batch_size": 4, "max_steps": 6, "checkpoint_steps": 2,
                          "logging_steps": 1, "learning_rate": 1e-3, "max_seq_length": 64, **overrides})


def test_config_ranges_name_the_field():
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainConfig(learning_rate=5.0)
    with pytest.raises(ValidationError, match="rank"):
        TrainConfig(rank=0)
    with pytest.raises(ValidationError, match="needs method 'qlora'"):
        TrainConfig(method="lora", quantization="nf4")
    assert TrainConfig(method="qlora").quantization == "nf4"


def test_int8_is_refused_not_trained_as_nf4():
    with pytest.raises(ValidationError, match=r"quantization\n.*'int8' is not supported.*'nf4'"):
        TrainConfig(method="qlora", quantization="int8")


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapter_trains_loads_and_checkpoints_land_in_storage(tiny_model_dir: Path, tmp_path: Path, method: str):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    store = CheckpointStore(Storage((tmp_path / "bucket").as_uri()), "runs/job/checkpoints")
    result = train(tiny_model_dir, ROWS, config(method=method), tmp_path / "work", store)
    assert result.method == method and result.global_step == 6 and result.resumed_from_step is None
    assert result.train_loss is not None and any("loss" in h for h in result.log_history)
    assert store.steps() == [2, 4, 6]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.adapter_dir)
    assert peft.peft_config["default"].use_dora is (method == "dora")


def test_qlora_runs_or_falls_back_with_a_reason(tiny_model_dir: Path, tmp_path: Path):
    from weft.training.trainer import four_bit_unavailable

    store = CheckpointStore(Storage((tmp_path / "bucket").as_uri()), "ckpt")
    reason = four_bit_unavailable()
    result = train(tiny_model_dir, ROWS, config(method="qlora", max_steps=2), tmp_path / "work", store)
    if reason is None:  # bitsandbytes works on this machine: the real 4-bit path ran
        assert result.method == "qlora" and result.fallback_reason is None
    else:
        assert result.method == "lora" and "bitsandbytes" in result.fallback_reason


@pytest.mark.gpu
def test_qlora_trains_in_4bit_on_a_cuda_gpu(tiny_model_dir: Path, tmp_path: Path):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs the [gpu] extra (bitsandbytes)")
    store = CheckpointStore(Storage((tmp_path / "bucket").as_uri()), "ckpt")
    result = train(tiny_model_dir, ROWS, config(method="qlora", max_steps=2), tmp_path / "work", store)
    assert (result.method, result.fallback_reason, result.global_step) == ("qlora", None, 2)


class Crash(Exception):
    pass


def test_resume_from_the_last_complete_checkpoint(tiny_model_dir: Path, tmp_path: Path):
    from transformers import TrainerCallback

    class CrashAfterStep4(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:  # checkpoint-4 is complete in storage; 5 is lost
                raise Crash()

    storage = Storage((tmp_path / "bucket").as_uri())
    store = CheckpointStore(storage, "runs/job/checkpoints")
    with pytest.raises(Crash):
        train(tiny_model_dir, ROWS, config(), tmp_path / "attempt1", store, callbacks=[CrashAfterStep4()])
    assert store.steps() == [2, 4]
    storage.write_bytes("runs/job/checkpoints/checkpoint-5/adapter_model.safetensors", b"half written")
    assert store.steps() == [2, 4]  # no marker: ignored

    steps_seen: list[int] = []
    result = train(tiny_model_dir, ROWS, config(), tmp_path / "attempt2", store,
                   on_log=lambda line: steps_seen.append(line["step"]))
    assert result.resumed_from_step == 4
    assert steps_seen[0] == 5 and result.global_step == 6
