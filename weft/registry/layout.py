"""Where a model's artifacts live in object storage.

A fine-tuned model's adapter is its adapter row's folder (`adapters/<adapter id>`); a base model's weights are
its `storage_uri`; exports go to `exports/<model id>/gguf/` and `exports/<model id>/merged/`. A record created
through `POST /models` may name its own folders (`details.lora_adapters_key`, `details.gguf_key`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from weft.storage import Storage
from weft.tables import Adapter, Model

LORA_ADAPTERS = "lora_adapters"
GGUF = "gguf"
MERGED = "merged"
WEIGHTS = "model"


def export_key(model_id: str, kind: str) -> str:
    """The folder an export of `kind` (gguf | merged) of the model is written to."""
    return f"exports/{model_id}/{kind}"


def gguf_name(quantization: str) -> str:
    return f"model-{quantization}.gguf"


def adapter_of(session: Session, model: Model) -> Adapter | None:
    """The adapter a fine-tuned model is base + adapter of."""
    adapter_id = (model.details or {}).get("adapter_id")
    return session.get(Adapter, adapter_id) if adapter_id else None


def storage_key(storage: Storage, model: Model) -> str | None:
    """The model's own storage key (its `storage_uri` below this storage's root), if it has one."""
    if not model.storage_uri:
        return None
    try:
        return storage.key_of(model.storage_uri)
    except ValueError:
        return None  # a model outside weft's storage (a hub id, a cloud model)


@dataclass(frozen=True)
class Artifacts:
    """A model's folders by the name they have in its ZIP (`lora_adapters`, `gguf`, `merged`, `model`)."""

    storage_path: str | None
    folders: dict[str, str]
    files: dict[str, tuple[str, int]]  # `<folder>/<relative path>` (the ZIP's layout) → (object key, bytes)

    @property
    def lora_adapters_path(self) -> str | None:
        return self.folders.get(LORA_ADAPTERS)

    @property
    def gguf_path(self) -> str | None:
        return self.folders.get(GGUF)

    @property
    def merged_path(self) -> str | None:
        return self.folders.get(MERGED)


def artifacts(session: Session, storage: Storage, model: Model) -> Artifacts:
    """The model's artifact folders that hold files, and those files (each folder listed once)."""
    details = model.details or {}
    own = storage_key(storage, model)
    adapter = adapter_of(session, model)
    candidates = {
        LORA_ADAPTERS: details.get("lora_adapters_key") or (adapter.storage_key if adapter else None),
        GGUF: details.get("gguf_key") or export_key(model.id, GGUF),
        MERGED: export_key(model.id, MERGED),
    }
    if own and not adapter and own not in candidates.values():  # a base model's own weights
        candidates[WEIGHTS] = own
    listed = {name: storage.objects(key) for name, key in candidates.items() if key}
    return Artifacts(storage_path=own, folders={name: candidates[name] for name, objs in listed.items() if objs},
                     files={f"{name}/{rel}": obj for name, objs in listed.items() for rel, obj in objs.items()})
