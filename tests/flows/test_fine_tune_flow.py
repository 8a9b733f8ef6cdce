"""The fine_tune flow in-process: tiny model + chat dataset → adapter and fine-tuned model registered."""

from __future__ import annotations

from pathlib import Path

from weft.db import session_scope
from weft.storage import get_storage
from weft.tables import Adapter, Model


def test_fine_tune_registers_adapter_and_model(prefect_server, db, tiny_model_dir: Path, tmp_path: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from flows.fine_tune import fine_tune
    from weft.specs.training import FineTuneSpec
    from weft.testing.registry import register_dataset, register_model, register_user
    from weft.training.config import TrainConfig

    storage = get_storage()
    user_id = register_user()
    base_id = register_model(user_id, tiny_model_dir)
    rows = [{"messages": [{"role": "user", "content": f"code {i}"}, {"role": "assistant", "content": f"part {i % 3}"}]}
            for i in range(24)]
    dataset_id = register_dataset(user_id, "codes", rows)

    spec = FineTuneSpec(base_model=base_id, dataset_id=dataset_id, name="tiny codes",
                        config=TrainConfig(method="dora", rank=4, alpha=8, batch_size=4, max_steps=4,
                                           checkpoint_steps=2, logging_steps=1, learning_rate=1e-3, max_seq_length=64))
    state = fine_tune(spec=spec, owner_id=user_id, return_state=True)
    assert state.is_completed(), state.message
    model_id = state.result()
    with session_scope() as s:
        model = s.get(Model, model_id)
        adapter = s.get(Adapter, model.details["adapter_id"])
    assert (model.type, model.base_model, model.parameters["adapter_type"]) == ("fine-tuned", "tiny base", "dora")
    assert adapter.base_model_id == base_id and adapter.dataset_id == dataset_id and adapter.config["max_steps"] == 4
    assert adapter.metrics["train_loss"] > 0 and len(adapter.sha256) == 64
    # registered with its adapter's scan, so it passes the deploy gate
    assert model.scan["status"] == "SAFE" and model.scan_verified
    assert model.scan["file_hashes"] == {"adapter_model.safetensors": adapter.sha256}
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                       str(storage.local_path(adapter.storage_key)))
    assert loaded.peft_config["default"].use_dora
    workflow_id = str(state.state_details.flow_run_id)
    assert [s for s in storage.list(f"runs/{workflow_id}/checkpoints") if s.endswith("COMPLETE")] == [
        "checkpoint-2/COMPLETE", "checkpoint-4/COMPLETE"]
    assert adapter.metrics["train_tokens_per_second"] > 0 and adapter.metrics["global_step"] == 4
    assert storage.read_bytes(f"{adapter.storage_key}/loss_curve.png")[:8] == b"\x89PNG\r\n\x1a\n"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    summary = next(a for a in artifacts if a.type == "markdown" and a.key and a.key.startswith("fine-tune-"))
    assert "train_tokens_per_second" in summary.data and "data:image/png;base64," in summary.data


def test_progress_lines_round_trip():
    from weft.training.progress import format_line, parse_line

    line = format_line({"step": 5, "max_steps": 60, "loss": 1.2345, "learning_rate": 2e-4, "epoch": 0.25,
                        "tokens_per_second": 812.4, "eta_seconds": 41.0, "num_tokens": 99})
    assert line == "step 5/60 loss=1.2345 learning_rate=0.0002 epoch=0.25 tokens_per_second=812.4 eta_seconds=41"
    assert parse_line(line) == {"step": 5, "max_steps": 60, "loss": 1.2345, "learning_rate": 2e-4, "epoch": 0.25,
                                "tokens_per_second": 812.4, "eta_seconds": 41.0}
    assert parse_line("prepared 24 messages records") is None


def test_qlora_without_bitsandbytes_says_why_in_the_run_logs(prefect_server, db, tiny_model_dir: Path):
    import time

    from flows.fine_tune import fine_tune
    from weft.jobs import read_logs
    from weft.specs.training import FineTuneSpec
    from weft.testing.registry import register_dataset, register_model, register_user
    from weft.training.config import TrainConfig
    from weft.training.trainer import four_bit_unavailable

    user_id = register_user()
    rows = [{"instruction": f"code {i}", "output": f"part {i % 3}"} for i in range(16)]
    spec = FineTuneSpec(base_model=register_model(user_id, tiny_model_dir), name="tiny qlora",
                        dataset_id=register_dataset(user_id, "codes-q", rows),
                        config=TrainConfig(method="qlora", rank=4, alpha=8, batch_size=4, max_steps=2,
                                           checkpoint_steps=2, max_seq_length=64))
    state = fine_tune(spec=spec, owner_id=user_id, return_state=True)
    assert state.is_completed(), state.message
    reason = four_bit_unavailable()
    with session_scope() as s:
        adapter = s.get(Adapter, s.get(Model, state.result()).details["adapter_id"])
    assert adapter.method == ("lora" if reason else "qlora")
    if reason is None:
        return  # bitsandbytes works here: the real 4-bit path ran
    deadline = time.monotonic() + 30  # Prefect ships logs in batches
    while not any("qlora fell back to lora: bitsandbytes" in line.message
                  for line in read_logs(str(state.state_details.flow_run_id), offset=0, limit=200,
                                        newest_first=False)):
        assert time.monotonic() < deadline, "no fallback reason in the run's logs"
        time.sleep(0.5)
