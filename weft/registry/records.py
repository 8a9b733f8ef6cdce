"""Creating, updating and deleting registry records (document 002), with the storage they may point at.

A record may only point at storage its user owns: the folders of their own models, adapters and exports.
Deleting a record removes its bytes unless another record still points at them, and is refused while the
model is deployed or is the base of a fine-tuned model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import Session, col, or_, select

from weft.clock import utcnow
from weft.errors import Conflict, Forbidden, Invalid
from weft.registry.layout import export_key, storage_key
from weft.specs.names import WorkflowName
from weft.statuses import MODEL_STATUS_ALIASES, EndpointStatus, ModelStatus
from weft.storage import Storage
from weft.tables import Adapter, Endpoint, Model, Revision, Workflow

ADAPTER_TYPES = ("lora", "qlora", "dora")
MODEL_TYPES = ("base", "fine-tuned", "cloud", "classic", *ADAPTER_TYPES)  # the types a record (and a filter) may name


def model_status(value: str) -> ModelStatus:
    """A status a record may have (document 002's `ready` is `active`); `Invalid` for anything else."""
    try:
        return MODEL_STATUS_ALIASES.get(value) or ModelStatus(value)
    except ValueError:
        allowed = sorted({*ModelStatus, *MODEL_STATUS_ALIASES})
        raise Invalid(f"Invalid parameter: status must be one of {', '.join(allowed)}",
                      [{"field": "status", "message": f"one of {allowed}"}]) from None


class ModelFields(BaseModel):
    """What `POST /models` and `PUT /models/{id}` may set (document 002)."""

    model_config = {"extra": "forbid"}

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    base_model: str | None = Field(default=None, max_length=300)
    type: str | None = Field(default=None, description=f"one of {', '.join(MODEL_TYPES)}")
    job_id: str | None = Field(default=None, description="the fine-tune job that produced it")
    storage_path: str | None = Field(default=None, description="a storage key of the caller's")
    lora_adapters_path: str | None = None
    gguf_path: str | None = None
    status: str | None = Field(default=None, description="uploading | ready (= active) | error")
    training_metrics: dict[str, Any] | None = None
    specialization: str | None = None
    tags: list[dict[str, Any]] | None = None


def owned_keys(session: Session, storage: Storage, user_id: str) -> list[str]:
    """The storage folders of the user's records: their models' own keys, adapters and exports."""
    keys: list[str] = []
    for model in session.exec(select(Model).where(Model.user_id == user_id)):
        keys.append(export_key(model.id, "").rstrip("/"))
        if key := storage_key(storage, model):
            keys.append(key)
    keys += [a.storage_key for a in session.exec(select(Adapter).where(Adapter.user_id == user_id))]
    return keys


def owns(session: Session, storage: Storage, user_id: str, key: str) -> bool:
    """Whether `key` is (inside) a folder of the user's records."""
    key = key.strip("/")
    return ".." not in key.split("/") and any(key == k or key.startswith(f"{k}/")
                                              for k in owned_keys(session, storage, user_id))


def _check_key(session: Session, storage: Storage, user_id: str, field: str, key: str) -> str:
    key = key.strip("/")
    if not key or not owns(session, storage, user_id, key):
        raise Forbidden(f"{field} {key!r} is not storage you own: point it at one of your models, adapters or "
                        "exports", {"field": field, "path": key})
    if not storage.exists(key):
        raise Invalid(f"nothing is stored at {field} {key!r}", [{"field": field, "message": "not found in storage"}])
    return key


def _apply(session: Session, storage: Storage, user_id: str, model: Model, fields: ModelFields) -> None:
    data = fields.model_dump(exclude_unset=True)
    details, parameters = dict(model.details or {}), dict(model.parameters or {})
    if "type" in data:
        if data["type"] not in MODEL_TYPES:
            raise Invalid(f"type must be one of {', '.join(MODEL_TYPES)}",
                          [{"field": "type", "message": f"one of {list(MODEL_TYPES)}"}])
        model.type = "fine-tuned" if data["type"] in ADAPTER_TYPES else data["type"]
        if data["type"] in ADAPTER_TYPES:
            parameters["adapter_type"] = data["type"]
    if "status" in data:
        model.status = model_status(data["status"])
    if "job_id" in data:
        wf = session.get(Workflow, data["job_id"]) if data["job_id"] else None
        if data["job_id"] and (wf is None or wf.user_id != user_id or wf.workflow_type != WorkflowName.FINE_TUNE):
            raise Invalid(f"job {data['job_id']} does not exist", [{"field": "job_id", "message": "not your job"}])
        model.workflow_id = data["job_id"]
    if data.get("storage_path") is not None:
        model.storage_uri = storage.url(_check_key(session, storage, user_id, "storage_path", data["storage_path"]))
    for field, detail in (("lora_adapters_path", "lora_adapters_key"), ("gguf_path", "gguf_key")):
        if data.get(field) is not None:
            details[detail] = _check_key(session, storage, user_id, field, data[field])
    for field in ("name", "description", "base_model", "specialization", "tags"):
        if field in data and (data[field] is not None or field in ("description", "specialization")):
            setattr(model, field, data[field])
    if data.get("training_metrics") is not None:
        model.metrics = data["training_metrics"]
    model.details, model.parameters, model.updated_at = details, parameters, utcnow()


def create(session: Session, storage: Storage, user_id: str, fields: ModelFields) -> Model:
    """A record of storage the user owns (document 002's `POST /models`)."""
    if not fields.name:
        raise Invalid("name is required", [{"field": "name", "message": "required"}])
    model = Model(user_id=user_id, name=fields.name, type="fine-tuned", provider_type="registry",
                  status=ModelStatus.ACTIVE)
    _apply(session, storage, user_id, model, fields)
    if not (model.storage_uri or model.details.get("lora_adapters_key") or model.details.get("gguf_key")):
        raise Invalid("a model record needs storage_path, lora_adapters_path or gguf_path",
                      [{"field": "storage_path", "message": "required"}])
    session.add(model)
    session.commit()
    session.refresh(model)
    return model


def update(session: Session, storage: Storage, model: Model, fields: ModelFields) -> Model:
    """Change a record, validated as on create (document 002's `PUT /models/{id}`)."""
    _apply(session, storage, model.user_id, model, fields)
    session.add(model)
    session.commit()
    session.refresh(model)
    return model


def deployments_of(session: Session, model_id: str) -> list[str]:
    """Endpoints (not stopped) that serve the model in any revision."""
    served = select(Revision.endpoint_id).where(Revision.model_id == model_id)
    stmt = select(Endpoint.id).where(or_(Endpoint.model_id == model_id, col(Endpoint.id).in_(served)),
                                     Endpoint.status != EndpointStatus.STOPPED)
    return list(session.exec(stmt))


def _referenced_elsewhere(session: Session, storage: Storage, model: Model, key: str) -> bool:
    # a record can only point at its own user's storage, so only that user's records can share a folder
    for other in session.exec(select(Model).where(Model.user_id == model.user_id, Model.id != model.id)):
        refs = [storage_key(storage, other), (other.details or {}).get("lora_adapters_key"),
                (other.details or {}).get("gguf_key"), export_key(other.id, "").rstrip("/")]
        if any(r and (r == key or r.startswith(f"{key}/") or key.startswith(f"{r}/")) for r in refs):
            return True
    return session.exec(select(Adapter).where(Adapter.user_id == model.user_id, Adapter.storage_key == key,
                                              Adapter.model_id != model.id)).first() is not None


def delete(session: Session, storage: Storage, model: Model) -> list[str]:
    """Remove the record, its adapters and exports, and every byte no other record points at; returns the
    storage keys removed. Refused (409) while deployed or while fine-tuned models are built on it."""
    if endpoints := deployments_of(session, model.id):
        raise Conflict(f"model {model.id} is deployed ({', '.join(endpoints)}): delete its deployments first",
                       {"model_id": model.id, "endpoints": endpoints})
    dependents = [a.model_id or a.id for a in session.exec(select(Adapter).where(Adapter.base_model_id == model.id))]
    if dependents:
        raise Conflict(f"model {model.id} is the base of fine-tuned models {', '.join(dependents)}: delete them "
                       "first", {"model_id": model.id, "dependents": dependents})
    adapters = list(session.exec(select(Adapter).where(Adapter.model_id == model.id)))
    keys = [k for k in (storage_key(storage, model), (model.details or {}).get("lora_adapters_key"),
                        (model.details or {}).get("gguf_key"), *(a.storage_key for a in adapters),
                        export_key(model.id, "").rstrip("/")) if k]
    removed = [k for k in dict.fromkeys(keys)
               if storage.exists(k) and not _referenced_elsewhere(session, storage, model, k)]
    for adapter in adapters:
        session.delete(adapter)
    session.delete(model)
    session.commit()
    for key in removed:  # after the rows: a failure here leaves orphaned bytes, never a record without them
        storage.delete(key)
    return removed
