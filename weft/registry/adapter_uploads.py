"""Registering an uploaded adapter (document 003's `POST /adapters/upload`): one peft `.safetensors` file and
its metadata become an adapter and a fine-tuned model (base + adapter) that deploys like a trained one."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from sqlmodel import Session

from weft import hardware
from weft.clock import utcnow
from weft.datasets.uploads import CappedReader
from weft.errors import Invalid
from weft.ids import new_id
from weft.jobs import InvalidConfig, resolve_base_model
from weft.registry.adapter_files import (
    AdapterMetadata,
    AdapterShape,
    check_against_base,
    read_safetensors_header,
    write_peft_folder,
)
from weft.registry.layout import storage_key
from weft.scan.report import adapter_scan
from weft.statuses import ModelStatus
from weft.storage import get_storage
from weft.tables import Adapter, Model
from weft.webhooks.outbox import model_created

ADAPTER_FILE = "adapter_model.safetensors"


def _receive(stream: BinaryIO, target: Path, cap: int) -> str:
    """Copy the upload to `target` (TooLarge past `cap`); its sha256."""
    reader = CappedReader(stream, cap)
    with target.open("wb") as out:
        shutil.copyfileobj(reader, out, 1 << 20)  # type: ignore[misc]
    return reader.sha256.hexdigest()


def register_upload(session: Session, user_id: str, stream: BinaryIO, metadata: AdapterMetadata,
                    cap: int) -> tuple[Adapter, Model, AdapterShape]:
    """Validate the upload (safetensors header, scan, shapes against its base model), store it as a peft folder
    and register the adapter with its fine-tuned model. Nothing is stored or registered when a check fails."""
    try:
        base = resolve_base_model(session, user_id, metadata.base_model)
    except InvalidConfig as exc:
        raise Invalid(str(exc), [{"field": "metadata.base_model", "message": "not a model with weights"}]) from exc
    storage = get_storage()
    base_key = storage_key(storage, base)
    if base_key is None or (base.details or {}).get("format") == "gguf":
        raise Invalid(f"base model {base.name} has no Hugging Face weights in storage to check the adapter against",
                      [{"field": "metadata.base_model", "message": "needs safetensors weights"}])
    adapter_id, model_id = new_id(), new_id()
    key = f"adapters/{adapter_id}"
    with tempfile.TemporaryDirectory(prefix="weft-adapter-") as tmp:
        upload = Path(tmp) / "upload.safetensors"
        digest = _receive(stream, upload, cap)
        tensors = read_safetensors_header(upload)  # the scan's header check: what passes here scans SAFE
        scan = adapter_scan(upload, ADAPTER_FILE, digest)
        with storage.local(base_key) as base_dir:
            shape = check_against_base(tensors, base_dir, metadata)
        folder = write_peft_folder(upload, metadata, base.uri or base.name, Path(tmp) / "adapter")
        size = storage.put_dir(folder, key)
    name = metadata.name or f"{base.name}-{metadata.algorithm}-upload"
    config = {"method": metadata.algorithm, "rank": metadata.rank, "lora_alpha": metadata.alpha,
              "target_modules": metadata.target_modules, "lora_dropout": metadata.dropout}
    adapter = Adapter(id=adapter_id, user_id=user_id, name=name, base_model_id=base.id, model_id=model_id,
                      method=metadata.algorithm, config=config, storage_key=key, size_bytes=size, sha256=digest)
    model = Model(id=model_id, user_id=user_id, name=name, description=metadata.description, type="fine-tuned",
                  provider_type="adapter", base_model=base.name, status=ModelStatus.ACTIVE, storage_uri=storage.url(key),
                  details={**(base.details or {}), "base_model_id": base.id, "adapter_id": adapter_id,
                           "uploaded": True, "trainable_parameters": shape.trainable_parameters},
                  parameters={"model_size": (base.details or {}).get("parameter_count") and
                              hardware.human_size(base.details["parameter_count"]),
                              "adapter_type": metadata.algorithm},
                  scan=scan.model_dump(), scan_verified=True, updated_at=utcnow())
    session.add(adapter)
    session.add(model)
    model_created(session, model_id, name, "fine-tuned", None, user_id)
    session.commit()
    return adapter, model, shape
