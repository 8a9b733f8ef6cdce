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
