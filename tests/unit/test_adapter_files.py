"""Uploaded LoRA/DoRA adapter files: the safetensors check, the check against the base, the peft folder."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from weft.errors import InvalidInput
from weft.registry.adapter_files import (
    AdapterFileError,
    AdapterMetadata,
    TensorInfo,
    check_against_base,
    read_safetensors_header,
    write_peft_folder,
)
from weft.testing.adapters import build_adapter

PROMPT = torch.tensor([[3, 4, 5, 6, 7]])


def metadata(**overrides) -> AdapterMetadata:
    fields = {"base_model": "tiny-llama", "rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    return AdapterMetadata(**{**fields, **overrides})


def make_adapter(base_dir: Path, out: Path, *, dora: bool = False):
    """A peft adapter (r=4, alpha=8, q_proj+v_proj, non-zero B so it changes the logits) and its loaded model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    build_adapter(base_dir, out, dora=dora)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), out).eval()
    return out / "adapter_model.safetensors", model


@pytest.fixture(scope="module")
def lora(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def dora(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("dora"), dora=True)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(PROMPT).logits


@pytest.mark.parametrize("algorithm", ["lora", "dora"])
def test_valid_adapter_passes_and_its_peft_folder_loads(algorithm, lora, dora, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    file, original = lora if algorithm == "lora" else dora
    meta = metadata(algorithm=algorithm)
    shape = check_against_base(read_safetensors_header(file), tiny_model_dir, meta)
    assert shape.rank == 4
    assert shape.modules == [f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
    # lora_A (4x64) + lora_B (64x4 for q, 32x4 for v) per layer, plus the magnitude vectors (64 + 32) for DoRA
    assert shape.trainable_parameters == 2 * (2 * 256 + 256 + 128) + (2 * 96 if algorithm == "dora" else 0)

    out = write_peft_folder(file, meta, str(tiny_model_dir), tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_dora"]) == (4, 8, algorithm == "dora")
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    assert torch.equal(logits(loaded), logits(original))
    with original.disable_adapter():
        assert not torch.allclose(logits(original), logits(loaded))  # the adapter does change the output


def test_dora_adapter_is_refused_as_lora(dora, tiny_model_dir):
    with pytest.raises(AdapterFileError, match="DoRA magnitude vectors .*lora_magnitude_vector.*set algorithm to dora"):
        check_against_base(read_safetensors_header(dora[0]), tiny_model_dir, metadata(algorithm="lora"))


def test_lora_adapter_is_refused_as_dora(lora, tiny_model_dir):
    with pytest.raises(AdapterFileError, match="algorithm is dora but module .* has no lora_magnitude_vector"):
        check_against_base(read_safetensors_header(lora[0]), tiny_model_dir, metadata(algorithm="dora"))


def test_truncated_file_is_refused(lora, tmp_path):
    data = lora[0].read_bytes()
    cut = tmp_path / "adapter.safetensors"
    cut.write_bytes(data[:-100])
    with pytest.raises(AdapterFileError, match=r"^truncated: expected (\d+) bytes of tensor data, found \d+$") as exc:
        read_safetensors_header(cut)
    assert isinstance(exc.value, InvalidInput) and exc.value.code == "INVALID_INPUT"


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_pickle_renamed_safetensors_is_refused(kind, tmp_path):
    path = tmp_path / "adapter.safetensors"
    state = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 64)}
    if kind == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    with pytest.raises(AdapterFileError, match="^not a safetensors file: it is a (zip archive|Python pickle)"):
        read_safetensors_header(path)


def test_garbage_and_trailing_bytes_are_refused(lora, tmp_path):
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(AdapterFileError, match="^not a safetensors file: its header is not JSON"):
        read_safetensors_header(path)
    path.write_bytes(lora[0].read_bytes() + b"extra")
    with pytest.raises(AdapterFileError, match="5 bytes follow the tensor data"):
        read_safetensors_header(path)


def test_non_float_tensor_is_refused(tmp_path):
    path = tmp_path / "adapter.safetensors"
    save_file({"base_model.model.x.lora_A.weight": torch.zeros(4, 8, dtype=torch.int8)}, path)
    with pytest.raises(AdapterFileError, match="dtype I8; adapter weights must be floating point"):
        read_safetensors_header(path)


def test_shape_mismatch_names_the_tensor_and_both_shapes(tiny_model_dir, tmp_path_factory):
    from weft.testing.tiny_model import build_tiny_model

    wide = build_tiny_model(tmp_path_factory.mktemp("wide") / "tiny-128", hidden=128)
    file, _ = make_adapter(wide, tmp_path_factory.mktemp("wide-lora"))
    with pytest.raises(AdapterFileError) as exc:
        check_against_base(read_safetensors_header(file), tiny_model_dir, metadata())
    assert exc.value.message == (
        "shape mismatch: tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape [4, 128], "
        "expected [4, 64] for base model tiny-llama (model.layers.0.self_attn.q_proj.weight is [64, 64])"
    )


def test_rank_mismatch_is_refused(lora, tiny_model_dir):
    with pytest.raises(
        AdapterFileError, match=r"rank mismatch: tensor .*q_proj\.lora_A\.weight has rank 4, the metadata says 8"
    ):
        check_against_base(read_safetensors_header(lora[0]), tiny_model_dir, metadata(rank=8))


def test_module_not_in_base_is_refused(lora, tiny_model_dir, tmp_path):
    moved = {k.replace("layers.1.", "layers.7."): v for k, v in load_file(lora[0]).items()}
    save_file(moved, tmp_path / "adapter.safetensors")
    with pytest.raises(
        AdapterFileError, match=r"^module model\.layers\.7\.self_attn\.q_proj is not in base model tiny-llama$"
    ):
        check_against_base(read_safetensors_header(tmp_path / "adapter.safetensors"), tiny_model_dir, metadata())


def test_target_modules_must_match_the_file(lora, tiny_model_dir):
    tensors = read_safetensors_header(lora[0])
    with pytest.raises(
        AdapterFileError,
        match=r"module model\.layers\.0\.self_attn\.v_proj \(v_proj\) is not in target_modules \['q_proj'\]",
    ):
        check_against_base(tensors, tiny_model_dir, metadata(target_modules=["q_proj"]))
    with pytest.raises(
        AdapterFileError, match="target_modules lists k_proj but the file has no adapter weights for it"
    ):
        check_against_base(tensors, tiny_model_dir, metadata(target_modules=["q_proj", "v_proj", "k_proj"]))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("base_model.model.model.embed_tokens.lora_embedding_A", "embedding adapters .* are not supported"),
        ("base_model.model.lm_head.weight", "is not a LoRA/DoRA weight in peft's saved format"),
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "has lora_B.weight but no lora_A.weight"),
    ],
)
def test_tensor_names_outside_peft_lora_format_are_refused(name, message, tiny_model_dir):
    with pytest.raises(AdapterFileError, match=message):
        check_against_base({name: TensorInfo("F32", (4, 64))}, tiny_model_dir, metadata())


def test_sharded_base_is_read_from_its_index(lora, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    shape = check_against_base(read_safetensors_header(lora[0]), tmp_path, metadata())
    assert len(shape.modules) == 4


def test_metadata_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError, match="lora_rank"):
        AdapterMetadata.model_validate(
            {"base_model": "m", "rank": 4, "alpha": 8, "target_modules": ["q_proj"], "lora_rank": 4}
        )
    for bad in ({"rank": 0}, {"alpha": 0}, {"target_modules": []}, {"algorithm": "qlora"}):
        with pytest.raises(ValidationError):
            metadata(**bad)
