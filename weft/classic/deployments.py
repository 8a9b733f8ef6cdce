"""Classic deployments as the API drives them (document 001): store an upload and start its deploy (a new
deployment, or a new version of one), what a deployment shows of its model, and changing its limits.
Functions take the session and raise `weft.errors`; they commit where they say so."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePath
from typing import Any, BinaryIO

from sqlmodel import Session, select

from weft import workflows
from weft.classic import envs
from weft.classic.formats import UnsupportedFile, framework_of
from weft.datasets.uploads import store_upload
from weft.errors import Conflict, InvalidInput
from weft.ids import new_id
from weft.serving import lifecycle, revisions
from weft.serving.launch import CLASSIC_ENGINE
from weft.settings import get_settings
from weft.specs.names import WorkflowName
from weft.statuses import EndpointKind, EndpointStatus, ReplicaState
from weft.storage import get_storage
from weft.tables import Endpoint, Model, Replica, Workflow
from weft.webhooks.outbox import emit

REQUIREMENTS_CAP = 64 * 1024
DEFAULT_BOUNDS = (1, 3)  # replicas of a new deployment: one always warm, up to three under load
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")  # what a stored file name keeps
NAME = re.compile(r"[\w .:/-]{1,100}")  # a deployment's name (as an LLM endpoint's)


@dataclass
class Started:
    endpoint: Endpoint
    model: Model
    workflow: Workflow
    version: str


def invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, {"field": field, "reason": message})


def read_requirements(stream: BinaryIO) -> list[str]:
    """The requirements file's lines (Invalid for one too large, not UTF-8, or with refused lines)."""
    raw = stream.read(REQUIREMENTS_CAP + 1)
    if len(raw) > REQUIREMENTS_CAP:
        raise invalid("requirements_file", f"requirements.txt is larger than {REQUIREMENTS_CAP // 1024} KB")
    try:
        return envs.parse_requirements(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise invalid("requirements_file", "requirements.txt is not UTF-8 text") from exc
    except envs.RequirementsError as exc:
        raise invalid("requirements_file", str(exc)) from exc


def target(session: Session, user_id: str, name: str) -> Endpoint | None:
    """The caller's classic deployment called `name` (the upload becomes its next version), or None for a
    new name; Conflict when the name is another deployment's."""
    endpoint = revisions.endpoint_named(session, name)
    if endpoint is None:
        return None
    if endpoint.user_id != user_id or endpoint.kind != EndpointKind.CLASSIC:
        raise Conflict(f"a deployment named {name!r} exists already", {"field": "name"})
    return endpoint


def start_deploy(session: Session, user_id: str, *, model_stream: BinaryIO, file_name: str, requirements: list[str],
                 name: str | None, memory_mb: int | None, timeout_seconds: float | None, changes: str | None = None,
                 endpoint: Endpoint | None = None) -> Started:
    """Store the upload (capped, streamed, all or nothing), register it as a model, create the deployment
    (unless `endpoint` or the named deployment gets a new version) and start its deploy_classic_model
    workflow. Nothing stays stored when anything fails. Commits."""
    framework = framework_of_upload(file_name)
    name = name or (endpoint.name if endpoint else PurePath(file_name).stem)
    endpoint = endpoint or target(session, user_id, name)
    model_id = new_id()
    folder = f"classic/{model_id}"
    safe_name = SAFE_NAME.sub("_", PurePath(file_name).name)
    cap = get_settings().max_upload_mb * 2**20
    size, sha256 = store_upload(model_stream, f"{folder}/{safe_name}", cap)  # TooLarge past the cap
    try:
        get_storage().write_bytes(f"{folder}/requirements.txt", ("\n".join(requirements) + "\n").encode())
        return _register(session, user_id, model_id, folder, safe_name, framework, size, sha256, requirements,
                         name, memory_mb, timeout_seconds, changes, endpoint)
    except Exception:
        session.rollback()
        get_storage().delete(folder)
        raise


def framework_of_upload(file_name: str) -> str:
    try:
        return framework_of(file_name)
    except UnsupportedFile as exc:
        raise invalid("model_file", str(exc)) from exc


def _register(session: Session, user_id: str, model_id: str, folder: str, file_name: str, framework: str,
              size: int, sha256: str, requirements: list[str], name: str, memory_mb: int | None,
              timeout_seconds: float | None, changes: str | None, endpoint: Endpoint | None) -> Started:
    model = Model(id=model_id, user_id=user_id, name=f"{name} ({file_name})", type="classic", modality="classic",
                  provider_type="upload", storage_uri=get_storage().url(folder),
                  details={"framework": framework, "file_name": file_name, "file_key": f"{folder}/{file_name}",
                           "size_mb": round(size / 2**20, 3), "sha256": sha256, "requirements": requirements})
    session.add(model)
    created = endpoint is None
    if created:
        low, high = DEFAULT_BOUNDS
        endpoint = Endpoint(id=new_id(), user_id=user_id, model_id=model_id, name=name,
                            slug=revisions.unique_slug(session, name), status=EndpointStatus.DEPLOYING,
                            kind=EndpointKind.CLASSIC, engine=CLASSIC_ENGINE, min_instances=low, max_instances=high,
                            memory_mb=memory_mb or 1024, timeout_seconds=timeout_seconds or 30.0)
        session.add(endpoint)
    session.flush()
    spec = {"model_id": model_id, "endpoint_id": endpoint.id, "memory_mb": memory_mb or endpoint.memory_mb,
            "timeout_seconds": timeout_seconds or endpoint.timeout_seconds,
            "changes": changes or f"uploaded {file_name}"}
    try:  # the rows commit with the workflow (its run reads them); a refused start removes them again
        wf = workflows.create(session, user_id, WorkflowName.DEPLOY_CLASSIC_MODEL, [spec], trigger=True,
                              name=f"deploy {name}")
    except Exception:
        session.rollback()
        for row in (model, endpoint if created else None):
            if row is not None and (stored := session.get(type(row), row.id)) is not None:
                session.delete(stored)
        session.commit()
        raise
    model.workflow_id = wf.id
    endpoint.memory_mb, endpoint.timeout_seconds = spec["memory_mb"], spec["timeout_seconds"]  # its replicas' limits
    if created:
        endpoint.workflow_id = wf.id
        emit(session, "deployment.created", revisions.event_data(endpoint), key=f"deployment:{endpoint.id}:created",
             user_id=user_id)
    session.add(model)
    session.add(endpoint)
    session.commit()
    return Started(endpoint, model, wf, revisions.version_of_workflow(session, endpoint.id, wf.id))


def model_metadata(model: Model | None) -> dict[str, Any]:
    """Document 001's `model_metadata`: what the upload's inspection found (the suffix's framework until then)."""
    if model is None:
        return {}
    details = model.details or {}
    found = details.get("detected") or {}
    if model.modality != "classic":  # an LLM: its architecture as the model type
        return {"framework": "transformers", "model_type": details.get("architecture") or model.name,
                "size_mb": details.get("size_mb")}
    return {"framework": found.get("framework", details.get("framework")), "model_type": found.get("model_type"),
            "size_mb": details.get("size_mb"), "input_shape": found.get("input_shape"),
            "output_shape": found.get("output_shape"), "feature_names": found.get("feature_names"),
            "probabilities": found.get("probabilities"), "library_version": found.get("library_version"),
            "environment": details.get("env")}


def restart_for_limits(session: Session, endpoint: Endpoint) -> int:
    """New memory or timeout limits apply to new server processes: the classic replicas drain and the
    controller starts their replacements with the new limits. Returns how many drain."""
    grace = timedelta(seconds=get_settings().replica_drain_seconds)
    healthy = list(session.exec(select(Replica).where(Replica.endpoint_id == endpoint.id,
                                                      Replica.state == ReplicaState.HEALTHY)))
    for replica in healthy:
        lifecycle.drain_replica(session, replica, "new memory or timeout limits", grace)
    return len(healthy)
