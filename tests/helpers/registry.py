"""A user's registry as a fine-tune leaves it, written straight to the database and storage (in-process tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from weft.db import session_scope
from weft.storage import get_storage
from weft.tables import Adapter, Evaluation, Model, Workflow

ADAPTER_BYTES = b"\x00" * 3000 + b"adapter"
GGUF_BYTES = b"GGUF" + bytes(range(256)) * 40


def _at(days: int) -> datetime:
    return datetime(2026, 11, 1, 12, tzinfo=UTC) + timedelta(days=days)


def registry(user_id: str) -> dict[str, str]:
    """A base model with weights, a job's fine-tuned model (adapter, GGUF export, evaluation) and a QLoRA one."""
    storage = get_storage()
    base = Model(user_id=user_id, name=f"base-{user_id[:6]}", provider_type="disk", created_at=_at(0),
                 details={"license": "apache-2.0", "parameter_count": 576})
    storage.write_bytes(f"models/{base.id}/model.safetensors", b"weights")
    storage.write_bytes(f"models/{base.id}/config.json", b"{}")
    base.storage_uri = storage.url(f"models/{base.id}")
    job = Workflow(user_id=user_id, workflow_type="fine_tune", status="COMPLETED", total_steps=2, current_step=2)
    tuned, qlora = Model(user_id=user_id, name="advisor", type="fine-tuned", provider_type="adapter",
                         base_model=base.name, workflow_id=job.id, created_at=_at(5)), \
        Model(user_id=user_id, name="q-advisor", type="fine-tuned", provider_type="adapter", base_model=base.name,
              created_at=_at(10))
    rows = [base, job, tuned, qlora]
    for model, method, metrics in ((tuned, "lora", {"train_loss": 0.25}), (qlora, "qlora", {"train_loss": 0.5})):
        adapter = Adapter(user_id=user_id, name=model.name, base_model_id=base.id, model_id=model.id, method=method,
                          workflow_id=job.id if model is tuned else None, dataset_id="ds-1", dataset_fingerprint="f" * 64,
                          config={"rank": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
                          metrics=metrics, storage_key="", size_bytes=len(ADAPTER_BYTES))
        adapter.storage_key = f"adapters/{adapter.id}"
        storage.write_bytes(f"{adapter.storage_key}/adapter_model.safetensors", ADAPTER_BYTES)
        storage.write_bytes(f"{adapter.storage_key}/adapter_config.json", b'{"r": 8}')
        model.storage_uri = storage.url(adapter.storage_key)
        model.details = {"base_model_id": base.id, "adapter_id": adapter.id}
        rows.append(adapter)
    storage.write_bytes(f"exports/{tuned.id}/gguf/model-q8_0.gguf", GGUF_BYTES)
    tuned.details = {**tuned.details, "exports": {"gguf": {"quantization": "q8_0"}}}
    rows.append(Evaluation(id=f"eval-{tuned.id}", user_id=user_id, model_id=tuned.id, status="completed",
                           completed_at=_at(6), results={"base_model": {"accuracy": 0.5},
                                                          "fine_tuned": {"accuracy": 0.75, "f1_score": 0.7}}))
    with session_scope() as s:
        for row in rows:
            s.add(row)
    return {"base": base.id, "tuned": tuned.id, "qlora": qlora.id, "job": job.id}
