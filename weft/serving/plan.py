"""Deployment configs, templates and the replica plan: how many serving processes an endpoint needs
for its `deploy_config` given the model's memory estimate and the device it will run on."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from weft import hardware
from weft.serving.server.types import DEFAULT_MAX_BATCH

TEMPLATES = Path(__file__).resolve().parent.parent / "catalog" / "templates.yaml"
# Sequences one replica decodes together (both batch continuously): vLLM's default --max-num-seqs, and
# weft's transformers server's --max-batch. The replica is started with the plan's figure and reports it.
ENGINE_CONCURRENCY = {"vllm": 256, "transformers": DEFAULT_MAX_BATCH}
Engine = Literal["vllm", "transformers"]


class DeployConfig(BaseModel):
    """Document 004's deploy_config (ranges as [low, high]), plus an explicit `replicas` override."""

    model_config = ConfigDict(extra="forbid")

    concurrent_requests: int = Field(default=1, ge=1, le=100_000)
    avg_sequence_length: int = Field(default=256, ge=1, le=1_000_000)
    avg_context_length: int = Field(default=1024, ge=1, le=10_000_000)
    ttft: list[float] | None = Field(default=None, min_length=2, max_length=2, description="[low, high] ms")
    e2e_latency: list[float] | None = Field(default=None, min_length=2, max_length=2, description="[low, high] ms")
    per_session_tokens_per_sec: list[float] | None = Field(default=None, min_length=2, max_length=2)
    replicas: int | None = Field(default=None, ge=1, le=64, description="overrides the planned replica count")
    max_replicas: int = Field(default=8, ge=1, le=64)

    @model_validator(mode="after")
    def _ranges_ordered(self):
        for name in ("ttft", "e2e_latency", "per_session_tokens_per_sec"):
            value = getattr(self, name)
            if value is not None and value[0] > value[1]:
                raise ValueError(f"{name} must be [low, high] with low <= high")
        return self


class AutoScaling(BaseModel):
    """Replica bounds of every revision with traffic (document 000's `auto_scaling`, 001's instances, 003's
    replicas); `min_instances: 0` scales to zero when idle. `target_concurrency` is the requests in flight
    per replica the autoscaler aims at (default: what one replica of the plan serves at once)."""

    model_config = ConfigDict(extra="forbid")

    min_instances: int = Field(default=1, ge=0, le=64)
    max_instances: int = Field(default=1, ge=1, le=64)
    target_concurrency: int | None = Field(default=None, ge=1, le=10_000)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) must not exceed max_instances "
                             f"({self.max_instances})")
        return self


class Template(BaseModel):
    id: str
    name: str
    use_case: str
    deploy_config: DeployConfig


@lru_cache(maxsize=1)
def templates() -> dict[str, Template]:
    data = yaml.safe_load(TEMPLATES.read_text())
    return {t["id"]: Template.model_validate(t) for t in data["templates"]}


class Plan(BaseModel):
    replicas: int
    per_replica_concurrency: int
    engine: str
    device: str
    device_memory_gb: float
    weights_gb: float
    kv_per_sequence_gb: float
    reason: str


def plan_replicas(details: dict[str, Any], config: DeployConfig, *, engine: str, device: str,
                  device_memory_gb: float) -> Plan:
    """Replicas = concurrent requests over what one replica holds at once: the engine's batch limit
    and the KV cache (avg context + sequence per request) that fits beside the weights."""
    params = details.get("parameter_count") or 0
    weights = hardware.weights_bytes(params, 16 if device != "cpu" else 32) / hardware.GB
    seq = config.avg_context_length + config.avg_sequence_length
    kv = 0.0
    if details.get("num_layers") and details.get("hidden_size") and details.get("num_attention_heads"):
        kv = hardware.kv_cache_bytes(details["num_layers"], seq, details["hidden_size"], details["num_attention_heads"],
                                     details.get("num_key_value_heads")) / hardware.GB
    free = device_memory_gb * 0.9 - weights * hardware.OVERHEAD
    if free <= 0:
        raise ValueError(f"the model needs ~{weights:.1f} GB for its weights but {device} has {device_memory_gb:.1f} GB")
    fits = int(free // kv) if kv > 0 else ENGINE_CONCURRENCY[engine]
    per_replica = max(1, min(ENGINE_CONCURRENCY[engine], fits))
    if config.replicas:
        return Plan(replicas=config.replicas, per_replica_concurrency=per_replica, engine=engine, device=device,
                    device_memory_gb=device_memory_gb, weights_gb=weights, kv_per_sequence_gb=kv,
                    reason=f"{config.replicas} replica(s) as requested")
    needed = math.ceil(config.concurrent_requests / per_replica)
    replicas = min(needed, config.max_replicas)
    reason = (f"{config.concurrent_requests} concurrent requests / {per_replica} per {engine} replica "
              f"(KV {kv * 1000:.1f} MB per {seq}-token request, {free:.1f} GB free beside the weights)")
    if needed > replicas:
        reason += f"; capped at max_replicas={config.max_replicas} (needed {needed})"
    return Plan(replicas=replicas, per_replica_concurrency=per_replica, engine=engine, device=device,
                device_memory_gb=device_memory_gb, weights_gb=weights, kv_per_sequence_gb=kv, reason=reason)
