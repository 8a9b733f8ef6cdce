"""The add_local_model / add_cloud_model flows run in-process against the test Prefect server."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from prefect.states import Failed
from sqlmodel import select

from weft.db import session_scope
from weft.hardware import human_size
from weft.specs import get_type
from weft.storage import get_storage
from weft.tables import Model, User, Workflow, WorkflowStep

OPENAI = "6f1b5a3e-0a0b-4c59-9d0e-000000000001"
GPT_4O = "6f1b5a3e-0a0b-4c59-9d0e-100000000001"
LOCAL_STAGES = ["validate_source", "fetch_model", "extract_metadata", "estimate_hardware", "register_model"]
ALL_STAGES = [stage.id for stage in get_type("add_local_model").stages]  # the five above, then the scan
SCANS = {"scan_pickles", "validate_safetensors", "detect_code", "check_gguf"}


@pytest.fixture(scope="module")
def owner(prefect_server, db) -> str:
    with session_scope() as s:
        user = User(email=f"onboard-{uuid.uuid4().hex[:8]}@example.com", username=f"onboard-{uuid.uuid4().hex[:8]}",
                    password_hash="x")
        s.add(user)
    return user.id


def local_spec(provider_type: str, uri: str, name: str = "tiny llama"):
    from weft.specs.models import AddLocalModelSpec

    return AddLocalModelSpec(modality="llm", provider_type=provider_type, name=name, uri=uri, author="weft",
                             tags=[{"name": "test", "color": "#112233"}])


def run_local(spec, owner: str, workflow_id: str | None = None):
    from flows.add_local_model import add_local_model

    return add_local_model(spec=spec, workflow_id=workflow_id, owner_id=None if workflow_id else owner,
                           return_state=True)


def task_states(flow_run_id: UUID, expected: int, timeout: float = 20) -> dict[str, str]:
    """Task-run name (without suffix) → final state name, read back through the Prefect client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        states = {r.name.rsplit("-", 1)[0]: r.state.name for r in runs if r.state and r.state.is_final()}
        if len(states) >= expected or time.monotonic() > deadline:
            return states
        time.sleep(0.3)


def models_of(workflow_id: str) -> list[Model]:
    with session_scope() as s:
        return list(s.exec(select(Model).where(Model.workflow_id == workflow_id)))


def test_disk_model_registers_then_rerun_is_cached(owner: str, tiny_model_dir: Path):
    state = run_local(local_spec("disk", str(tiny_model_dir)), owner)
    assert state.is_completed(), state.message
    model_id, workflow_id = state.result(), str(state.state_details.flow_run_id)
    assert model_id == str(uuid.uuid5(uuid.NAMESPACE_URL, f"weft-model:{workflow_id}"))

    with session_scope() as s:  # started outside the API: the flow made the workflow record itself
        wf = s.get(Workflow, workflow_id)
        rows = s.exec(select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id))
        steps = {row.step_number: row.data for row in rows}
        model = s.get(Model, model_id)
    assert (wf.user_id, wf.workflow_type, wf.status, wf.flow_run_id, wf.total_steps) == (
        owner, "add_local_model", "RUNNING", workflow_id, 4)
    assert steps[1] == {"modality": "llm"} and steps[2] == {"provider_type": "disk"}
    assert steps[3]["uri"] == str(tiny_model_dir) and steps[4] == {"proprietary_credential_id": None}

    assert (model.name, model.type, model.provider_type, model.status, model.user_id) == (
        "tiny llama", "base", "disk", "active", owner)
    assert model.tags == [{"name": "test", "color": "#112233"}] and model.author == "weft"
    assert model.details["architecture"] == "LlamaForCausalLM" and model.details["context_length"] == 256
    assert model.details["has_chat_template"] is True and model.details["license"] == "apache-2.0"
    assert model.parameters == {"model_size": model.parameters["model_size"], "quantization": None,
                                "adapter_type": None}
    assert model.parameters["model_size"] == human_size(model.details["parameter_count"])
    assert model.hardware["serve_fp16_gb"] > 0 and model.hardware["complete"] is True
    storage = get_storage()
    assert model.storage_uri == storage.url(f"models/{model_id}")
    expected_files = sorted(p.relative_to(tiny_model_dir).as_posix() for p in tiny_model_dir.rglob("*") if p.is_file())
    assert storage.list(f"models/{model_id}") == expected_files == model.details["files"]
    assert storage.read_bytes(f"models/{model_id}/config.json") == (tiny_model_dir / "config.json").read_bytes()
    assert not storage.exists(f"staging/{workflow_id}/model")
    states = task_states(state.state_details.flow_run_id, len(ALL_STAGES))
    assert {v for k, v in states.items() if k not in SCANS} == {"Completed"}
    assert {v for k, v in states.items() if k in SCANS} <= {"Completed", "Cached"}  # cached by content: an
    # earlier test of this process may have scanned the same bytes
    assert model.scan["status"] == "SAFE" and model.scan_verified  # the scan is onboarding's last step

    again = run_local(local_spec("disk", str(tiny_model_dir)), owner, workflow_id=workflow_id)
    assert again.is_completed() and again.result() == model_id
    assert task_states(again.state_details.flow_run_id, len(ALL_STAGES)) == {name: "Cached" for name in ALL_STAGES}
    assert len(models_of(workflow_id)) == 1
    with session_scope() as s:
        assert s.get(Workflow, workflow_id).status == "RUNNING"  # the flow leaves status to the API


def test_disk_single_gguf_and_unknown_owner(owner: str, tiny_gguf_file: Path):
    state = run_local(local_spec("disk", str(tiny_gguf_file), name="disk gguf"), owner)
    assert state.is_completed(), state.message
    model_id = state.result()
    assert get_storage().list(f"models/{model_id}") == [tiny_gguf_file.name]
    with session_scope() as s:
        assert s.get(Model, model_id).details["quantization"] == "Q8_0"

    from flows.add_local_model import add_local_model

    nobody = add_local_model(spec=local_spec("disk", str(tiny_gguf_file)), owner_id="no-such-user", return_state=True)
    assert nobody.is_failed() and "owner_id no-such-user is not a weft user" in nobody.message


def test_hugging_face_offline_fails_clearly_then_succeeds_from_the_cache(owner: str, tiny_model_dir: Path):
    repo = "weft-flow-tests/tiny-llama"
    failed = run_local(local_spec("hugging_face", repo, name="hf tiny"), owner)
    assert failed.is_failed()
    workflow_id = str(failed.state_details.flow_run_id)
    assert f"{repo} is not in the local Hugging Face cache" in failed.message
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in failed.message
    states = task_states(failed.state_details.flow_run_id, 2)
    assert states == {"validate_source": "Completed", "fetch_model": "Failed"}
    assert models_of(workflow_id) == [] and not get_storage().exists(f"staging/{workflow_id}")

    commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    cache = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(tiny_model_dir, cache / "snapshots" / commit)
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)

    done = run_local(local_spec("hugging_face", repo, name="hf tiny"), owner, workflow_id=workflow_id)
    assert done.is_completed(), done.message
    states = task_states(done.state_details.flow_run_id, len(ALL_STAGES))
    assert states["validate_source"] == "Cached"
    assert {states[n] for n in LOCAL_STAGES[1:]} == {"Completed"}
    [model] = models_of(workflow_id)
    assert model.provider_type == "hugging_face" and model.uri == repo
    assert model.details["parameter_count"] == extract_params(tiny_model_dir)


def extract_params(folder: Path) -> int:
    from weft.model_metadata import extract_metadata

    return extract_metadata(folder).parameter_count


@pytest.fixture(scope="module")
def file_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a temporary folder: (base url, folder)."""
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", root
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files silently and remembers the Authorization headers it saw."""

    authorizations: list[str] = []

    def do_GET(self) -> None:
        if auth := self.headers.get("Authorization"):
            QuietHandler.authorizations.append(auth)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


def test_url_gguf_is_streamed_with_progress(owner: str, tiny_gguf_file: Path, file_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    base, root = file_server
    shutil.copy(tiny_gguf_file, root / tiny_gguf_file.name)
    state = run_local(local_spec("url", f"{base}/{tiny_gguf_file.name}", name="tiny gguf"), owner)
    assert state.is_completed(), state.message
    model_id = state.result()
    with session_scope() as s:
        model = s.get(Model, model_id)
    assert model.details["format"] == "gguf" and model.details["architecture"] == "llama"
    assert model.details["context_length"] == 512 and model.details["parameter_count"] == 576
    assert model.parameters["quantization"] == "Q8_0" and model.parameters["model_size"] == "576"
    assert get_storage().read_bytes(f"models/{model_id}/{tiny_gguf_file.name}") == tiny_gguf_file.read_bytes()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 1 and progress[0].data == 100.0
    assert "Status: SAFE" in next(a.data for a in artifacts if a.type == "markdown")  # the scan's report


def flow_logs(flow_run_id: UUID, contains: str, timeout: float = 10) -> list[str]:
    """The run's log messages, once one containing `contains` has arrived (logs arrive late)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            logs = [log.message for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
        if any(contains in m for m in logs) or time.monotonic() > deadline:
            return logs


def test_credential_token_is_sent_but_never_logged(owner: str, tiny_gguf_file: Path, file_server):
    from prefect.blocks.system import Secret

    from weft.tables import Credential

    base, root = file_server
    shutil.copy(tiny_gguf_file, root / "private.gguf")
    token = f"hf_secret_{uuid.uuid4().hex}"
    Secret(value=token).save("weft-test-onboarding-token", overwrite=True)
    with session_scope() as s:
        stranger = User(email=f"x-{uuid.uuid4().hex[:8]}@example.com", username=f"x-{uuid.uuid4().hex[:8]}",
                        password_hash="x")
        s.add(stranger)
        s.flush()
        mine = Credential(user_id=owner, name="hf", provider_type="hugging_face", block_name="weft-test-onboarding-token")
        theirs = Credential(user_id=stranger.id, name="hf", provider_type="hugging_face",
                            block_name="weft-test-onboarding-token")
        s.add_all([mine, theirs])
    spec = local_spec("url", f"{base}/private.gguf", name="private")

    refused = run_local(spec.model_copy(update={"proprietary_credential_id": theirs.id}), owner)
    assert refused.is_failed() and f"credential {theirs.id} does not exist" in refused.message

    QuietHandler.authorizations.clear()
    state = run_local(spec.model_copy(update={"proprietary_credential_id": mine.id}), owner)
    assert state.is_completed(), state.message
    assert QuietHandler.authorizations == [f"Bearer {token}"]
    logs = flow_logs(state.state_details.flow_run_id, "registered model")
    assert any("with a credential" in m for m in logs) and not any(token in m for m in logs)


def test_url_archive_of_a_model_folder(owner: str, tiny_model_dir: Path, file_server):
    base, root = file_server
    with tarfile.open(root / "tiny.tar.gz", "w:gz") as tf:
        tf.add(tiny_model_dir, arcname="tiny-llama")
    state = run_local(local_spec("url", f"{base}/tiny.tar.gz", name="tiny archive"), owner)
    assert state.is_completed(), state.message
    with session_scope() as s:
        model = s.get(Model, state.result())
    assert model.details["parameter_count"] == extract_params(tiny_model_dir)
    assert "config.json" in get_storage().list(f"models/{model.id}")


def test_url_not_found_fails_without_retries_or_model(owner: str, file_server):
    base, _ = file_server
    state = run_local(local_spec("url", f"{base}/missing.gguf", name="missing"), owner)
    assert state.is_failed() and "404" in state.message
    assert models_of(str(state.state_details.flow_run_id)) == []


def test_transient_errors_are_retried_and_bad_sources_are_not():
    from tasks.models import transient_http_error

    request = httpx.Request("GET", "http://x/m.gguf")

    def status(code: int) -> httpx.HTTPStatusError:
        return httpx.HTTPStatusError("x", request=request, response=httpx.Response(code))

    assert transient_http_error(None, None, Failed(data=httpx.ConnectError("refused")))
    assert transient_http_error(None, None, Failed(data=status(503)))
    assert not transient_http_error(None, None, Failed(data=status(404)))
    assert not transient_http_error(None, None, Failed(data=RuntimeError("not in the cache")))


def test_archive_members_cannot_escape(tmp_path: Path):
    from tasks.models import extract_archive

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="escapes"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize("manual", [False, True])
def test_cloud_model_by_catalog_id_or_manual_uri(owner: str, manual: bool):
    from flows.add_cloud_model import add_cloud_model
    from weft.specs.models import AddCloudModelSpec

    spec = AddCloudModelSpec(provider_id=OPENAI, cloud_model_id=None if manual else GPT_4O,
                             name="manual" if manual else "catalog", uri="openai/my-finetune" if manual else None)
    state = add_cloud_model(spec=spec, owner_id=owner, return_state=True)
    assert state.is_completed(), state.message
    with session_scope() as s:
        model = s.get(Model, state.result())
    assert (model.type, model.provider_type, model.provider_id, model.storage_uri) == (
        "cloud", "cloud_model", OPENAI, None)
    assert model.details["provider"] == "OpenAI" and model.details["base_url"] == "https://api.openai.com/v1"
    if manual:
        assert model.uri == "openai/my-finetune" and model.details["cloud_model"] is None
    else:
        assert model.uri == "openai/gpt-4o" and model.cloud_model_id == GPT_4O
        assert model.details["context_length"] == 128000 and model.details["cloud_model"] == "gpt-4o"
    assert task_states(state.state_details.flow_run_id, 2) == {"resolve_cloud_model": "Completed",
                                                             "register_model": "Completed"}
