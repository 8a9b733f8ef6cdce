"""Model metadata read from files, and the hardware estimate computed from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weft import hardware
from weft.model_metadata import ModelMetadataError, extract_metadata


def test_tiny_model_metadata_is_exact(tiny_model_dir: Path):
    from safetensors.torch import load_file

    tensors = load_file(tiny_model_dir / "model.safetensors")
    meta = extract_metadata(tiny_model_dir)
    assert meta.parameter_count == sum(t.numel() for t in tensors.values())
    assert meta.architecture == "LlamaForCausalLM" and meta.model_type == "llama"
    assert meta.context_length == 256
    assert (meta.num_layers, meta.hidden_size, meta.num_attention_heads, meta.num_key_value_heads) == (2, 64, 4, 2)
    assert meta.vocab_size == json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    assert meta.dtype == "float32" and meta.format == "safetensors" and meta.quantization is None
    assert meta.has_chat_template is True
    assert meta.license == "apache-2.0"
    files = sorted(p for p in tiny_model_dir.rglob("*") if p.is_file())
    assert meta.files == [p.relative_to(tiny_model_dir).as_posix() for p in files]
    assert meta.size_bytes == sum(p.stat().st_size for p in files)


def test_gguf_metadata(tiny_gguf_file: Path):
    meta = extract_metadata(tiny_gguf_file)
    assert meta.architecture == "llama" and meta.format == "gguf"
    assert meta.context_length == 512
    assert meta.parameter_count == 4 * 64 + 4 * 64 + 64
    assert (meta.num_layers, meta.hidden_size, meta.num_attention_heads, meta.num_key_value_heads) == (2, 64, 4, 2)
    assert meta.quantization == "Q8_0" and meta.dtype == "Q8_0"
    assert meta.vocab_size == 4 and meta.license == "mit" and meta.has_chat_template is True
    assert meta.files == [tiny_gguf_file.name] and meta.size_bytes == tiny_gguf_file.stat().st_size
    assert extract_metadata(tiny_gguf_file.parent).parameter_count == meta.parameter_count


def test_pytorch_bin_fallback(tmp_path: Path):
    import torch

    torch.save({"embed.weight": torch.zeros(10, 8, dtype=torch.float16), "norm.weight": torch.ones(8)},
               tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "n_positions": 128,
                                                      "n_layer": 1, "n_embd": 8}))
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    meta = extract_metadata(tmp_path)
    assert meta.parameter_count == 88 and meta.format == "pytorch" and meta.dtype == "float16"
    assert (meta.context_length, meta.num_layers, meta.hidden_size) == (128, 1, 8)
    assert meta.has_chat_template is True and meta.license is None


def test_single_safetensors_file_without_config(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3, 5, dtype=torch.bfloat16)}, tmp_path / "model.safetensors")
    meta = extract_metadata(tmp_path)
    assert (meta.parameter_count, meta.dtype, meta.architecture, meta.context_length) == (15, "bfloat16", None, None)


def test_folder_without_weights_is_a_clear_error(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelMetadataError, match="config.json but no model weights"):
        extract_metadata(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ModelMetadataError, match="no config.json and no model weights"):
        extract_metadata(tmp_path)


def test_hardware_estimate_matches_hand_computation():
    # 1e9 params, 32 layers, hidden 4096, 32 heads, 8 KV heads (head_dim 128, kv_dim 1024), context 4096.
    est = hardware.estimate(1_000_000_000, num_layers=32, hidden_size=4096, num_attention_heads=32,
                            num_key_value_heads=8, context_length=4096)
    # KV cache: 2 * 32 * 4096 * 1024 * 2 = 536_870_912 bytes
    assert est.kv_cache_gb == pytest.approx(0.536871, abs=1e-6)
    # serve: (P * bits / 8 + KV) * 1.1
    assert est.serve_fp16_gb == pytest.approx(2.790558, abs=1e-6)  # 2_536_870_912 * 1.1
    assert est.serve_int8_gb == pytest.approx(1.690558, abs=1e-6)  # 1_536_870_912 * 1.1
    assert est.serve_int4_gb == pytest.approx(1.140558, abs=1e-6)  # 1_036_870_912 * 1.1
    # LoRA r=16 on q,k,v,o: 32 * 16 * (8192 + 2 * 5120 + 8192) = 13_631_488 params, 16 B each = 218_103_808
    assert est.lora_trainable_parameters == 13_631_488
    # activations, seq 2048: 2048 * 4096 * (64 + 34 + 5 * 32 * 2048 / 4096) = 1_493_172_224
    assert est.activations_gb == pytest.approx(1.493172, abs=1e-6)
    assert est.train_lora_gb == pytest.approx(4.082404, abs=1e-6)  # (2e9 + 218_103_808 + 1_493_172_224) * 1.1
    assert est.train_qlora_gb == pytest.approx(2.432404, abs=1e-6)  # (5e8 + 218_103_808 + 1_493_172_224) * 1.1
    assert est.complete is True


def test_hardware_estimate_without_architecture_counts_weights_only():
    est = hardware.estimate(135_000_000, num_layers=None, hidden_size=None, num_attention_heads=None)
    assert est.serve_fp16_gb == pytest.approx(0.297, abs=1e-9)  # 270e6 * 1.1
    assert est.serve_int4_gb == pytest.approx(0.07425, abs=1e-9)  # 67.5e6 * 1.1
    assert est.train_lora_gb == est.serve_fp16_gb and est.lora_trainable_parameters == 0
    assert est.complete is False


@pytest.mark.parametrize("count,text", [(134_515_008, "135M"), (7_241_732_096, "7.2B"), (1_000_000, "1M"),
                                        (2_500, "2.5K"), (999, "999")])
def test_human_size(count: int, text: str):
    assert hardware.human_size(count) == text
