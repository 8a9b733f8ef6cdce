"""Exporting a fine-tuned model: adapter merge, GGUF writing and the transformers round trip, on the tiny Llama."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType
from transformers import AutoModelForCausalLM, AutoTokenizer

from weft.errors import InvalidInput
from weft.export.gguf_writer import (
    DEGRADED,
    K_QUANTS,
    QUANTIZATIONS,
    TENSOR_TYPES,
    ExportUnavailable,
    _encode,
    write_gguf,
)
from weft.export.merge import merge_adapter
from weft.export.verify import verify_gguf, verify_merge
from weft.testing.adapters import build_adapter

PROMPT = "check the oil level and rotate the tires"
TENSORS = 2 * 9 + 3  # per block: 2 norms, q, k, v, o, gate, up, down; plus token_embd, output_norm, output


def logits(model_dir: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model.eval()(ids).logits[0]


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def merged_dir(tiny_model_dir: Path, lora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return merge_adapter(tiny_model_dir, lora_dir, tmp_path_factory.mktemp("merged"))


def test_merge_keeps_the_adapters_effect(tiny_model_dir: Path, lora_dir: Path, merged_dir: Path) -> None:
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {p.name for p in merged_dir.iterdir()}
    check = verify_merge(tiny_model_dir, lora_dir, merged_dir, PROMPT)
    assert check.max_abs_logit_delta < 1e-4 and check.argmax_equal and check.greedy_equal  # measured 2.4e-7
    # measured 0.80 (the logits span ±0.6): the adapter's effect survives the merge
    assert (logits(merged_dir) - logits(tiny_model_dir)).abs().max() > 0.1


def test_a_dora_adapter_merges(tiny_model_dir: Path, tmp_path: Path) -> None:
    dora_dir = build_adapter(tiny_model_dir, tmp_path / "dora", dora=True)
    merged_dir = merge_adapter(tiny_model_dir, dora_dir, tmp_path / "merged")
    check = verify_merge(tiny_model_dir, dora_dir, merged_dir, PROMPT)
    assert check.max_abs_logit_delta < 1e-4 and check.greedy_equal  # measured 1.8e-7
    assert (logits(merged_dir) - logits(tiny_model_dir)).abs().max() > 0.1  # measured 0.73


@pytest.mark.parametrize(("quantization", "max_delta"), [("f16", 0.005), ("q8_0", 0.05)])
def test_the_gguf_reloads_in_transformers_with_the_same_answers(
    merged_dir: Path, tmp_path: Path, quantization: str, max_delta: float
) -> None:
    written = write_gguf(merged_dir, tmp_path / f"merged-{quantization}.gguf", quantization)
    assert written.tensor_count == TENSORS and written.size_bytes == written.path.stat().st_size
    check = verify_gguf(merged_dir, written.path, PROMPT, new_tokens=8)
    # measured on this model (logits span ±0.6): f32 0.0, f16 0.00022, q8_0 0.0065 (q4_0 0.097, over the q8_0 bound)
    assert check.max_abs_logit_delta < max_delta
    assert check.argmax_equal and check.greedy_equal
    assert len(check.reference_tokens) == 8


def test_the_gguf_header_says_what_llama_cpp_needs(merged_dir: Path, tmp_path: Path) -> None:
    written = write_gguf(merged_dir, tmp_path / "model.gguf", "q8_0")
    reader = GGUFReader(written.path)

    def field(key: str):
        return reader.fields[key].contents()

    assert len(reader.tensors) == TENSORS
    assert field("general.architecture") == "llama"
    assert field("general.file_type") == LlamaFileType.MOSTLY_Q8_0
    assert (field("llama.block_count"), field("llama.embedding_length"), field("llama.feed_forward_length")) == (
        2,
        64,
        128,
    )
    assert (field("llama.attention.head_count"), field("llama.attention.head_count_kv")) == (4, 2)
    assert field("llama.context_length") == 256 and field("llama.rope.freq_base") == 10000.0
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert len(field("tokenizer.ggml.tokens")) == field("llama.vocab_size") == 304
    assert field("tokenizer.ggml.merges") and "<|assistant|>" in field("tokenizer.chat_template")
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (0, 1)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["output_norm.weight"] == types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == GGMLQuantizationType.Q8_0


def test_norms_stay_f32_and_odd_rows_fall_back_to_f16() -> None:
    rows = np.ones((4, 48), dtype=np.float32)  # 48 is not a multiple of Q8_0's block of 32
    assert _encode("blk.0.ffn_up.weight", rows, GGMLQuantizationType.Q8_0)[1] == GGMLQuantizationType.F16
    assert (
        _encode("blk.0.ffn_up.weight", np.ones((4, 64), np.float32), GGMLQuantizationType.Q8_0)[1]
        == GGMLQuantizationType.Q8_0
    )
    assert (
        _encode("output_norm.weight", np.ones(64, np.float32), GGMLQuantizationType.Q8_0)[1] == GGMLQuantizationType.F32
    )


def test_a_k_quant_without_llama_quantize_is_unavailable(
    merged_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExportUnavailable, match="llama-quantize") as raised:
        write_gguf(merged_dir, tmp_path / "model.gguf", "q4_k_m")
    assert isinstance(raised.value, InvalidInput) and "q8_0" in raised.value.message
    assert not (tmp_path / "model.gguf").exists()


def test_a_k_quant_runs_llama_quantize_on_an_f16_gguf(
    merged_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "bin" / "llama-quantize"
    tool.parent.mkdir()
    tool.write_text(f'#!/bin/sh\necho "$3" > {tmp_path}/type\ncp "$1" "$2"\n')  # stands in: copies the f16 file
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    written = write_gguf(merged_dir, tmp_path / "model.gguf", "Q4_K_M")
    assert (tmp_path / "type").read_text().strip() == "Q4_K_M"
    assert written.quantization == "q4_k_m" and written.tensor_count == TENSORS
    assert GGUFReader(written.path).fields["general.file_type"].contents() == LlamaFileType.MOSTLY_F16
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the temporary f16 is gone


def test_unknown_quantizations_and_architectures_are_refused(merged_dir: Path, tmp_path: Path) -> None:
    assert set(K_QUANTS) < set(QUANTIZATIONS) and set(DEGRADED) == {"q4_0", "q4_1", "q5_0", "q5_1"}
    assert set(TENSOR_TYPES) == set(QUANTIZATIONS) - set(K_QUANTS)
    with pytest.raises(ValueError, match="q8_0"):
        write_gguf(merged_dir, tmp_path / "model.gguf", "q3_x")
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}')
    with pytest.raises(InvalidInput, match="GPT2LMHeadModel"):
        write_gguf(other, tmp_path / "model.gguf", "f16")
