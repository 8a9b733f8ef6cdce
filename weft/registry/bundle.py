"""What a model's download holds: its artifact files, `metrics.json` and a model card, under `<model id>/`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import nullcontext
from functools import partial
from typing import Any

from sqlmodel import Session, col, select

from weft.registry.archive import Member
from weft.registry.card import model_card
from weft.registry.layout import adapter_of, artifacts
from weft.statuses import RunStatus
from weft.storage import Storage
from weft.tables import Evaluation, Model


def latest_evaluation(session: Session, model_id: str) -> Evaluation | None:
    """The model's most recent completed evaluation."""
    stmt = (select(Evaluation).where(Evaluation.model_id == model_id, Evaluation.status == RunStatus.COMPLETED)
            .order_by(col(Evaluation.completed_at).desc()))
    return session.exec(stmt).first()


def metrics_of(session: Session, model: Model) -> dict[str, Any]:
    """Training metrics (the adapter's, else the model's) and the latest evaluation's results."""
    adapter = adapter_of(session, model)
    evaluation = latest_evaluation(session, model.id)
    out: dict[str, Any] = {"model_id": model.id, "training": dict(adapter.metrics if adapter else model.metrics),
                           "evaluation": evaluation.results if evaluation else {}}
    if evaluation:
        out["evaluation_id"] = evaluation.id
        out["benchmarks"] = evaluation.benchmarks
    if exports := (model.details or {}).get("exports"):
        out["exports"] = exports
    return out


def _text(data: str) -> Any:
    return partial(nullcontext, io.BytesIO(data.encode()))


def members(session: Session, storage: Storage, model: Model) -> Iterator[Member]:
    """The archive's members in document 002's layout: `<id>/lora_adapters/…`, `<id>/gguf/…`, (`merged/`,
    `model/`), `<id>/metrics.json`, `<id>/README.md`."""
    listed = artifacts(session, storage, model).files
    for name, (key, size) in listed.items():
        yield Member(f"{model.id}/{name}", partial(storage.open_read, key), size)
    metrics = metrics_of(session, model)
    yield Member(f"{model.id}/metrics.json", _text(json.dumps(metrics, indent=2, sort_keys=True, default=str)))
    base_id = (model.details or {}).get("base_model_id")
    card = model_card(model, adapter_of(session, model), session.get(Model, base_id) if base_id else None,
                      metrics, sorted(listed))
    yield Member(f"{model.id}/README.md", _text(card))
