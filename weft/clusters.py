"""Clusters are Prefect work pools weft deploys onto. Each worker machine reports its hardware
(`weft worker --pool NAME` before it starts the Prefect worker; `weft up` for its own pools)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import yaml
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from weft import pools
from weft.clock import utcnow
from weft.db import session_scope
from weft.tables import Cluster

SYSTEM_POOLS = pools.TITLES


def detect_hardware() -> dict[str, Any]:
    """CPU count, memory and GPUs of this machine (nvidia-smi where present, else torch)."""
    gpus: list[dict[str, Any]] = []
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
        for line in out.stdout.strip().splitlines():
            name, mib = (part.strip() for part in line.split(","))
            gpus.append({"name": name, "memory_gb": round(float(mib) * 2**20 / 1e9, 1)})
    if not gpus:
        try:
            import torch

            gpus = [{"name": torch.cuda.get_device_name(i),
                     "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 1e9, 1)}
                    for i in range(torch.cuda.device_count())]
        except Exception:  # no torch or no CUDA: a CPU machine
            gpus = []
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return {"cpu_count": os.cpu_count(), "memory_gb": round(memory, 1), "gpus": gpus, "gpu_count": len(gpus),
            "reported_at": utcnow().isoformat()}


def report_hardware(pool: str) -> Cluster:
    """Record this machine's hardware on the pool's cluster (created for weft's own pools)."""
    hardware = detect_hardware()
    try:
        return _record_hardware(pool, hardware)
    except IntegrityError:  # another worker of the pool created the row at the same moment: update that one
        return _record_hardware(pool, hardware)


def _record_hardware(pool: str, hardware: dict[str, Any]) -> Cluster:
    with session_scope() as s:
        cluster = s.exec(select(Cluster).where(Cluster.pool_name == pool)).first()
        if cluster is None:
            cluster = Cluster(name=SYSTEM_POOLS.get(pool, pool), pool_name=pool)
        cluster.hardware = hardware
        s.add(cluster)
        s.flush()
        s.expunge(cluster)
    return cluster


def pool_type_of(configuration: str) -> str:
    """`kubernetes` for a kubeconfig, `docker` for a file naming a docker host or image, else `process`."""
    try:
        data = yaml.safe_load(configuration) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"the configuration file is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("the configuration file must be a YAML mapping")
    if data.get("kind") == "Config" and "clusters" in data:
        return "kubernetes"
    if "docker" in data or "image" in data:
        return "docker"
    return "process"
