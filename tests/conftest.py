"""Shared fixtures: an isolated WEFT_HOME per test session and a tiny local model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="weft-test-"))
os.environ["WEFT_HOME"] = str(_SESSION_HOME / "home")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["HF_HOME"] = str(_SESSION_HOME / "hf")


def pytest_unconfigure(config) -> None:
    """The session's home (databases, models, logs) goes with the session."""
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def tiny_model_dir(session_dir: Path) -> Path:
    """A tiny Llama folder (config, model.safetensors, tokenizer with chat template, card)."""
    from weft.testing.tiny_model import build_tiny_model

    return build_tiny_model(session_dir / "models" / "tiny-llama")


@pytest.fixture(scope="session")
def prefect_server(session_dir: Path):
    """One temporary Prefect server for in-process flow and API tests (~11 s, so session-scoped),
    with the saved result-storage block weft's resumable steps persist to."""
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from weft.settings import get_settings

    with prefect_test_harness(server_startup_timeout=60):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            block = get_settings().result_storage_block.split("/", 1)[1]
            LocalFileSystem(basepath=str(session_dir / "results")).save(block, overwrite=True)
            yield


@pytest.fixture(scope="session")
def db(session_dir: Path):
    """The migrated test database (SQLite under the session's WEFT_HOME)."""
    from weft.db import migrate

    migrate()
    return True


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (Debian's binaries; ~1 s to start)."""
    from weft.testing.services import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def s3():
    """A SeaweedFS S3 server for the session (`weed mini`; ~1 s to start)."""
    from weft.testing.services import SeaweedS3

    with SeaweedS3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3, request) -> str:
    """A fresh bucket for one test; returns its `s3://` URL."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    return s3.make_bucket(name)


def write_tiny_gguf(path: Path) -> Path:
    """A tiny llama GGUF: context 512, 2 blocks, one Q8_0 weight (256 elements) and two fp32 tensors."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), "llama")
    writer.add_context_length(512)
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_license("mit")
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    writer.add_token_list(["<s>", "</s>", "a", "b"])
    rng = np.random.default_rng(0)
    writer.add_tensor("blk.0.attn_q.weight", quantize(rng.random((4, 64), dtype=np.float32), GGMLQuantizationType.Q8_0),
                      raw_dtype=GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", rng.random((4, 64), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf_file(session_dir: Path) -> Path:
    """A tiny GGUF file (256 + 256 + 64 = 576 parameters, quantization Q8_0)."""
    return write_tiny_gguf(session_dir / "gguf" / "tiny-Q8_0.gguf")


@pytest.fixture(scope="module")
def client(db):
    """The API in-process (lifespan included); one app, so one rate-limit table, per test module."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


@pytest.fixture
def auth_headers(client):
    """A factory: register a fresh user and return its `Authorization: Bearer` headers."""
    import uuid

    def make(username: str | None = None, password: str = "long-enough-pw") -> dict[str, str]:
        username = username or f"u{uuid.uuid4().hex[:10]}"
        r = client.post("/api/v1/auth/register", json={"email": f"{username}@example.com", "username": username,
                                                         "password": password})
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """End-to-end modules first (a stable sort keeps each file's own order): with `make test`'s workers the
    short modules then fill in behind the long ones instead of a long one starting last. `@pytest.mark.gpu`
    tests are skipped where torch sees no CUDA device."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return  # torch is not imported for a selection without GPU tests
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_tests:
        item.add_marker(skip)
