"""Where an endpoint's replicas run and on which engine: the work pool (a cluster's, else the first of
`gpu`, `cpu` with an online worker), the device that pool reports, and the engine that serves there.
The deploy API answers with it and the plan step decides with it, so both say the same."""

from __future__ import annotations

import os

from sqlmodel import Session, or_, select

from weft import pools, runs
from weft.serving import launch
from weft.serving.plan import Engine
from weft.tables import Cluster, Model, Provider

REPLICA_POOLS = pools.GPU_FIRST


class PlacementError(ValueError):
    """A deploy request weft cannot honour; `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def target_cluster(session: Session, user_id: str, cluster_id: str | None, instance_type: str | None) -> str | None:
    """The cluster replicas go to: `cluster_id`, or the one `instance_type` names (the pool or name of one of
    the caller's clusters or of weft's own pools); None lets the plan pick a pool."""
    if not instance_type:
        return cluster_id
    cluster = session.exec(select(Cluster).where(
        or_(Cluster.pool_name == instance_type, Cluster.name == instance_type),
        or_(Cluster.user_id == user_id, Cluster.user_id.is_(None)))).first()
    if cluster is None:
        raise PlacementError("instance_type", f"instance_type {instance_type!r} is not a cluster: it names the work "
                             "pool of a registered cluster (GET /api/v1/clusters); weft does not provision cloud "
                             "instance types")
    if cluster_id and cluster_id != cluster.id:
        raise PlacementError("instance_type", f"instance_type {instance_type!r} names another cluster than cluster_id")
    return cluster.id


def replica_pool(session: Session, cluster_id: str | None) -> tuple[str, str | None]:
    """The pool replicas go to, with a note when it is a fallback."""
    if not cluster_id:
        return runs.pick_pool(REPLICA_POOLS)
    cluster = session.get(Cluster, cluster_id)
    if cluster is None:
        raise PlacementError("cluster_id", f"cluster {cluster_id} does not exist")
    return cluster.pool_name, None


def device_of(session: Session, pool: str) -> tuple[str, float]:
    """The device replicas of `pool` get (name, memory GB): the cluster's reported GPU, else this machine's."""
    cluster = session.exec(select(Cluster).where(Cluster.pool_name == pool)).first()
    gpus = (cluster.hardware or {}).get("gpus") if cluster else None
    return (gpus[0]["name"], gpus[0]["memory_gb"]) if gpus else local_device()


def local_device() -> tuple[str, float]:
    """This machine's first CUDA GPU (name, memory GB), else `cpu` and its memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory / 1e9
    return "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def choose_engine(requested: Engine | None, device: str) -> Engine:
    """vLLM where the device is a GPU and vLLM is installed, else weft's transformers server. A requested
    engine is honoured or refused (PlacementError), never swapped for another."""
    available: Engine = "vllm" if device != "cpu" and launch.engine_available() == "vllm" else "transformers"
    if requested == "vllm" and available != "vllm":
        raise PlacementError("endpoint_type", f"endpoint_type 'vllm' cannot run on {device}: vLLM needs a CUDA "
                             "GPU and the [gpu] extra where the replicas run; use 'transformers' or leave "
                             "endpoint_type out")
    return requested or available


def deploy_engine(session: Session, model: Model, requested: Engine | None, cluster_id: str | None) -> str | None:
    """What an endpoint of `model` will run on: the replica engine, or a cloud model's provider (its proxy)."""
    if model.provider_type == "cloud_model":
        if requested:
            raise PlacementError("endpoint_type", "a cloud model's endpoint proxies to its provider: "
                                 "endpoint_type does not apply")
        provider = session.get(Provider, model.provider_id) if model.provider_id else None
        return provider.name if provider else None
    pool, _ = replica_pool(session, cluster_id)
    return choose_engine(requested, device_of(session, pool)[0])
