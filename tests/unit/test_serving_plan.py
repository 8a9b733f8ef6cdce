"""The replica plan and the server command lines (vLLM's can only be checked as a command here)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from weft.serving.launch import ServerSpec, command
from weft.serving.plan import DeployConfig, plan_replicas, templates

SMOLLM2 = {"parameter_count": 134_515_008, "num_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
           "num_key_value_heads": 3}


def test_plan_follows_concurrency_engine_and_memory():
    cpu = plan_replicas(SMOLLM2, DeployConfig(concurrent_requests=40), engine="transformers", device="cpu",
                        device_memory_gb=24)
    assert (cpu.replicas, cpu.per_replica_concurrency) == (3, 16)  # weft's server batches 16 sequences
    gpu = plan_replicas(SMOLLM2, DeployConfig(concurrent_requests=10), engine="vllm", device="H100",
                        device_memory_gb=80)
    assert (gpu.replicas, gpu.per_replica_concurrency) == (1, 256)
    tight = plan_replicas(SMOLLM2, DeployConfig(concurrent_requests=100, avg_context_length=100_000,
                                                avg_sequence_length=1000), engine="vllm", device="T4",
                          device_memory_gb=2)
    assert tight.per_replica_concurrency < 256 and tight.replicas == min(8, -(-100 // tight.per_replica_concurrency))
    assert plan_replicas(SMOLLM2, DeployConfig(replicas=2), engine="vllm", device="H100",
                         device_memory_gb=80).replicas == 2
    with pytest.raises(ValueError, match="needs"):
        plan_replicas({"parameter_count": 70_000_000_000}, DeployConfig(), engine="vllm", device="T4",
                      device_memory_gb=16)


def test_deploy_config_and_templates_validate():
    with pytest.raises(ValidationError, match="low <= high"):
        DeployConfig(ttft=[1000, 50])
    with pytest.raises(ValidationError):
        DeployConfig(unknown_field=1)
    assert all(t.deploy_config.concurrent_requests >= 1 for t in templates().values())


def test_server_command_lines():
    assert command(ServerSpec(model_dir="/m", served_name="ep", engine="vllm", port=9)) == [
        "vllm", "serve", "/m", "--host", "127.0.0.1", "--port", "9", "--served-model-name", "ep"]
    assert command(ServerSpec(model_dir="/m", served_name="ep", engine="vllm", adapter_dir="/a", port=9))[-3:] == [
        "--enable-lora", "--lora-modules", "ep=/a"]
    weft = command(ServerSpec(model_dir="/m", served_name="ep", adapter_dir="/a", port=9))
    assert weft[1:3] == ["-m", "weft.serving.server"] and weft[-2:] == ["--default-adapter", "ep-adapter"]


def test_the_engine_is_the_one_asked_for_or_refused(monkeypatch):
    from weft.serving import launch
    from weft.serving.placement import PlacementError, choose_engine

    monkeypatch.setattr(launch, "engine_available", lambda: "transformers")
    assert choose_engine(None, "H100") == choose_engine("transformers", "cpu") == "transformers"
    with pytest.raises(PlacementError, match="endpoint_type 'vllm' cannot run on cpu") as refused:
        choose_engine("vllm", "cpu")
    assert refused.value.field == "endpoint_type"
    monkeypatch.setattr(launch, "engine_available", lambda: "vllm")
    assert choose_engine(None, "H100") == choose_engine("vllm", "H100") == "vllm"
    assert choose_engine("transformers", "H100") == "transformers"
    with pytest.raises(PlacementError):
        choose_engine("vllm", "cpu")  # vLLM installed, but the replicas' pool has no GPU


@pytest.mark.gpu
def test_vllm_serves_where_cuda_and_vllm_are_present():
    pytest.importorskip("vllm", reason="vLLM is the [gpu] extra")
    from weft.serving.placement import choose_engine, local_device

    assert choose_engine(None, local_device()[0]) == "vllm"
