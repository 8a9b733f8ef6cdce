"""Model-onboarding tasks: validate the source, fetch it into registry storage, read its metadata,
estimate hardware, register it. Each is a resumable step (see tasks/common.py)."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import State
from pydantic import BaseModel

from tasks.common import step_options
from weft import hardware, model_metadata
from weft.clock import utcnow
from weft.db import session_scope
from weft.ids import model_id_of
from weft.model_metadata import ModelMetadata
from weft.paths import resolve_disk_uri
from weft.secret_blocks import read_secret
from weft.specs.models import AddCloudModelSpec, AddLocalModelSpec, check_local_uri
from weft.statuses import ModelStatus
from weft.storage import CHUNK, get_storage
from weft.tables import CloudModel, Credential, Model, Provider
from weft.webhooks.outbox import model_created

WEIGHT_SUFFIXES = (".gguf", ".safetensors")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


class Source(BaseModel):
    """A checked model source."""

    provider_type: str
    uri: str
    local_path: str | None = None  # disk provider: the resolved path
    credential_block: str | None = None


class Staged(BaseModel):
    """Where the fetched model lies in registry storage."""

    key: str


def transient_http_error(task: Any, task_run: Any, state: State) -> bool:
    """Retry a fetch only for network hiccups and 5xx/429 answers, never for a bad source."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, httpx.TransportError)


@task(**step_options("validate_source"))
def validate_source(spec: AddLocalModelSpec, owner_id: str) -> Source:
    """Re-check the source on the worker: URI shape, disk roots, file type, the credential's owner."""
    check_local_uri(spec.provider_type, spec.uri)
    if spec.provider_type == "url" and not url_file_name(spec.uri).endswith(WEIGHT_SUFFIXES + ARCHIVE_SUFFIXES):
        raise ValueError(f"{spec.uri} must point to a .gguf or .safetensors file or a .zip/.tar.gz model archive")
    block = None
    if spec.proprietary_credential_id:
        with session_scope() as s:
            cred = s.get(Credential, spec.proprietary_credential_id)
            if cred is None or cred.user_id != owner_id:
                raise ValueError(f"credential {spec.proprietary_credential_id} does not exist")
            block = cred.block_name
    local = str(resolve_disk_uri(spec.uri)) if spec.provider_type == "disk" else None
    get_run_logger().info("source ok: %s %s%s", spec.provider_type, local or spec.uri,
                          " (with a credential)" if block else "")
    return Source(provider_type=spec.provider_type, uri=spec.uri, local_path=local, credential_block=block)


def url_file_name(url: str) -> str:
    return PurePosixPath(unquote(urlparse(url).path)).name


@task(**step_options("fetch_model", retries=2, retry_delay_seconds=3, retry_condition_fn=transient_http_error))
def fetch_model(source: Source, workflow_id: str) -> Staged:
    """Copy the model into `staging/{workflow_id}/model` (atomically) from the hub cache, a URL or disk."""
    log = get_run_logger()
    storage = get_storage()
    key = f"staging/{workflow_id}/model"
    if source.provider_type == "hugging_face":
        size = storage.put_dir(hf_snapshot(source.uri, read_secret(source.credential_block) if source.credential_block else None), key)
    elif source.provider_type == "disk":
        path = Path(source.local_path or "")
        if path.is_file():
            with path.open("rb") as fh:
                size = storage.put_stream_dir(key, path.name, fh)
        else:
            size = storage.put_dir(path, key)
    else:
        size = download_url(source.uri, key, read_secret(source.credential_block) if source.credential_block else None)
    log.info("fetched %d files, %s into %s", len(storage.list(key)), hardware.human_bytes(size), storage.url(key))
    return Staged(key=key)


def hf_snapshot(repo_id: str, token: str | None) -> Path:
    """The repo's snapshot folder: from the local cache, else downloaded unless HF_HUB_OFFLINE."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, token=token))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise RuntimeError(f"{repo_id} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                               "HF_HUB_OFFLINE=1 forbids downloading it; download it on a connected machine "
                               "or unset HF_HUB_OFFLINE") from None
    get_run_logger().info("downloading %s from the Hugging Face Hub", repo_id)
    return Path(snapshot_download(repo_id, token=token))


def download_url(url: str, key: str, token: str | None) -> int:
    """Stream a weights file or a model archive to storage, with a progress artifact."""
    name = url_file_name(url)
    storage = get_storage()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length") or 0)
        progress = create_progress_artifact(0.0, description=f"download of {name}")
        reader = ProgressReader(response.iter_bytes(1024 * 1024), total, progress)
        if name.endswith(WEIGHT_SUFFIXES):
            size = storage.put_stream_dir(key, name, reader)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / name
                with archive.open("wb") as out:
                    shutil.copyfileobj(reader, out, CHUNK)
                folder = Path(tmp) / "model"
                extract_archive(archive, folder)
                size = storage.put_dir(folder, key)
        update_progress_artifact(progress, 100.0)
    get_run_logger().info("downloaded %s (%s)", name, hardware.human_bytes(reader.read_bytes))
    return size


class ProgressReader:
    """A file-like view of an iterator of chunks that reports download progress to Prefect."""

    def __init__(self, chunks, total: int, artifact_id) -> None:
        self.chunks, self.total, self.artifact_id = chunks, total, artifact_id
        self.buffer, self.read_bytes, self.reported = b"", 0, 0.0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
            self.read_bytes += len(chunk)
            if self.total and (pct := 100 * self.read_bytes / self.total) - self.reported >= 5:
                update_progress_artifact(self.artifact_id, pct)
                self.reported = pct
        out, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
        return out


def extract_archive(archive: Path, target: Path) -> None:
    """Extract a zip/tar refusing members that would land outside `target`."""
    target.mkdir(parents=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (target / member).resolve().is_relative_to(target.resolve()):
                    raise ValueError(f"archive member {member} escapes the target folder")
            zf.extractall(target)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(target, filter="data")
    entries = list(target.iterdir())
    if len(entries) == 1 and entries[0].is_dir():  # archives usually wrap the folder: unwrap it
        wrapper = entries[0].rename(target / f".wrapper-{uuid.uuid4().hex[:8]}")
        for item in wrapper.iterdir():
            item.rename(target / item.name)
        wrapper.rmdir()


@task(**step_options("extract_metadata"))
def extract_metadata(staged: Staged) -> ModelMetadata:
    """Architecture, parameter count, context length, dtype, size, license, chat template."""
    with get_storage().local(staged.key) as folder:
        metadata = model_metadata.extract_metadata(folder)
    get_run_logger().info("%s: %s parameters (%d), context %s, %s, %d files, %s, license %s, chat template %s",
                          metadata.architecture, hardware.human_size(metadata.parameter_count),
                          metadata.parameter_count, metadata.context_length, metadata.dtype, len(metadata.files),
                          hardware.human_bytes(metadata.size_bytes), metadata.license, metadata.has_chat_template)
    return metadata


@task(**step_options("estimate_hardware"))
def estimate_hardware(metadata: ModelMetadata) -> hardware.HardwareEstimate:
    """GPU memory to serve at fp16/int8/int4 and to train with LoRA/QLoRA."""
    est = hardware.estimate(metadata.parameter_count, num_layers=metadata.num_layers, hidden_size=metadata.hidden_size,
                            num_attention_heads=metadata.num_attention_heads,
                            num_key_value_heads=metadata.num_key_value_heads, context_length=metadata.context_length)
    get_run_logger().info("GPU memory: serve fp16 %.4g GB / int8 %.4g GB / int4 %.4g GB; "
                          "train LoRA %.4g GB / QLoRA %.4g GB", est.serve_fp16_gb, est.serve_int8_gb,
                          est.serve_int4_gb, est.train_lora_gb, est.train_qlora_gb)
    return est


@task(**step_options("register_model"))
def register_local_model(spec: AddLocalModelSpec, staged: Staged, metadata: ModelMetadata,
                         estimate: hardware.HardwareEstimate, workflow_id: str, owner_id: str) -> str:
    """Move the staged files to `models/{id}` and insert the model row, in one transaction."""
    storage = get_storage()
    model_id = model_id_of(workflow_id)
    key = f"models/{model_id}"
    with session_scope() as s:
        s.merge(Model(
            id=model_id, user_id=owner_id, workflow_id=workflow_id, name=spec.name, description=spec.description,
            type="base", modality=spec.modality, provider_type=spec.provider_type, uri=spec.uri, author=spec.author,
            icon=spec.icon, tags=[t.model_dump() for t in spec.tags], status=ModelStatus.ACTIVE,
            storage_uri=storage.url(key),
            details=metadata.model_dump(), hardware=estimate.model_dump(),
            parameters={"model_size": hardware.human_size(metadata.parameter_count),
                        "quantization": metadata.quantization, "adapter_type": None},
            updated_at=utcnow(),
        ))
        if storage.exists(staged.key):
            storage.move(staged.key, key)
        elif not storage.exists(key):
            raise RuntimeError(f"staged files {storage.url(staged.key)} are gone; retry the workflow")
        model_created(s, model_id, spec.name, "base", workflow_id, owner_id)
    get_run_logger().info("registered model %s (%s) at %s", spec.name, model_id, storage.url(key))
    return model_id


class CloudTarget(BaseModel):
    uri: str
    provider: str
    base_url: str | None
    context_length: int | None
    cloud_model: str | None


@task(**step_options("resolve_cloud_model"))
def resolve_cloud_model(spec: AddCloudModelSpec) -> CloudTarget:
    """The catalog entry (or the manual uri) and its provider."""
    with session_scope() as s:
        provider = s.get(Provider, spec.provider_id)
        if provider is None:
            raise ValueError(f"provider {spec.provider_id} does not exist")
        cm = s.get(CloudModel, spec.cloud_model_id) if spec.cloud_model_id else None
        if spec.cloud_model_id and cm is None:
            raise ValueError(f"cloud model {spec.cloud_model_id} does not exist")
        if cm is not None and cm.provider_id != provider.id:
            raise ValueError(f"cloud model {spec.cloud_model_id} does not belong to provider {provider.name}")
        if cm is None and not spec.uri:
            raise ValueError("uri is required when no cloud model is selected")
        target = CloudTarget(uri=cm.uri if cm else spec.uri, provider=provider.name, base_url=provider.base_url,
                             context_length=cm.context_length if cm else None, cloud_model=cm.name if cm else None)
    get_run_logger().info("cloud model %s at %s (%s)", target.uri, target.provider, target.base_url)
    return target


@task(**step_options("register_model"))
def register_cloud_model(spec: AddCloudModelSpec, target: CloudTarget, workflow_id: str, owner_id: str) -> str:
    """Insert the cloud model's row (no weights to store)."""
    model_id = model_id_of(workflow_id)
    with session_scope() as s:
        s.merge(Model(
            id=model_id, user_id=owner_id, workflow_id=workflow_id, name=spec.name, description=spec.description,
            type="cloud", modality=spec.modality, provider_type="cloud_model", provider_id=spec.provider_id,
            cloud_model_id=spec.cloud_model_id, uri=target.uri, icon=spec.icon,
            tags=[t.model_dump() for t in spec.tags], status=ModelStatus.ACTIVE, details=target.model_dump(),
            parameters={"model_size": None, "quantization": None, "adapter_type": None}, updated_at=utcnow(),
        ))
        model_created(s, model_id, spec.name, "cloud", workflow_id, owner_id)
    get_run_logger().info("registered cloud model %s (%s)", spec.name, model_id)
    return model_id


