"""Shared fixtures: an isolated WEFT_HOME per test session and a tiny local model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="weft-test-"))
os.environ["WEFT_HOME"] = str(_SESSION_HOME / "home")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["HF_HOME"] = str(_SESSION_HOME / "hf")


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def tiny_model_dir(session_dir: Path) -> Path:
    """A tiny Llama folder (config, model.safetensors, tokenizer with chat template, card)."""
    from tests.tiny_model import build_tiny_model

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
