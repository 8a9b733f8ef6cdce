"""The resources (machine types) of the connected platforms, with their price and live availability:
a resource is available when a worker of its pool is online and reported matching hardware, and its
queue is the pool's waiting flow runs."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from weft import pools, runs
from weft.compute.catalog import Pricing, ResourceDef, get_platform, priced
from weft.compute.platforms import connected_pool
from weft.errors import Refused
from weft.schemas.platforms import Availability, Resource
from weft.settings import get_settings
from weft.statuses import PlatformStatus
from weft.tables import Cluster, PlatformConnection

RESOURCE_UNAVAILABLE = "RESOURCE_UNAVAILABLE"
LOCAL_POOLS = {"local-cpu": pools.CPU, "local-gpu": pools.GPU}


def _measured(resource_id: str, name: str, hardware: dict[str, Any]) -> ResourceDef:
    """A resource described by the hardware a pool's workers reported."""
    gpus = hardware.get("gpus") or []
    return ResourceDef(id=resource_id, name=name, gpu_type=gpus[0]["name"] if gpus else None, gpu_count=len(gpus),
                       vram_gb=gpus[0]["memory_gb"] if gpus else None, cpu_cores=hardware.get("cpu_count"),
                       ram_gb=hardware.get("memory_gb"))


def _pool_priced(provider: str, resource: ResourceDef, pool: str) -> ResourceDef:
    """Local and cluster resources cost what their pool's hour costs (`pool_hour_cost`), unless overridden."""
    rate = get_settings().pool_hour_cost.get(pool)
    return resource.model_copy(update={"pricing": priced(provider, resource.id, Pricing(hourly_rate=rate))})


def platform_resources(session: Session, provider: str, live: bool = True) -> list[Resource]:
    """The resources of one connected platform, with availability (not their queues) when `live`: it asks
    Prefect for each pool's online workers, which describing or pricing a resource does not need."""
    platform = get_platform(provider)
    clusters = {c.pool_name: c for c in session.exec(select(Cluster))}
    found: list[Resource] = []
    if platform.kind == "local":
        for resource_id, pool in LOCAL_POOLS.items():
            hardware = clusters[pool].hardware if pool in clusters else {}
            base = _pool_priced(provider, _measured(resource_id, pools.TITLES[pool], hardware), pool)
            found.append(Resource(**base.model_dump(), provider=provider, pool=pool))
    elif platform.kind == "kubernetes":
        for cluster in clusters.values():
            if cluster.pool_type == "kubernetes":
                base = _pool_priced(provider, _measured(cluster.pool_name, cluster.name, cluster.hardware),
                                    cluster.pool_name)
                found.append(Resource(**base.model_dump(), provider=provider, pool=cluster.pool_name))
    else:
        pool = connected_pool(session, provider)
        for resource in platform.resources:
            found.append(Resource(**resource.model_dump(exclude={"pricing"}), provider=provider, pool=pool,
                                  pricing=priced(provider, resource.id, resource.pricing)))
    for resource in found if live else ():
        resource.available = _available(resource, clusters.get(resource.pool))
    return found


def _available(resource: Resource, cluster: Cluster | None) -> bool:
    """An online worker in the pool, on hardware with the resource's GPU (any machine for a CPU resource)."""
    if not runs.online_workers(resource.pool):
        return False
    if not resource.gpu_count:
        return True
    gpus = ((cluster.hardware if cluster else {}) or {}).get("gpus") or []
    wanted = (resource.gpu_type or "").lower()
    return any(wanted in str(gpu.get("name", "")).lower() for gpu in gpus)


def connected_providers(session: Session) -> list[str]:
    """local, kubernetes when a cluster was added, and every connected cloud."""
    names = ["local"]
    if session.exec(select(Cluster).where(Cluster.pool_type == "kubernetes")).first():
        names.append("kubernetes")
    names += [row.name for row in session.exec(select(PlatformConnection).where(
        PlatformConnection.status == PlatformStatus.CONNECTED).order_by(PlatformConnection.name))]
    return names


def list_resources(session: Session, provider: str | None = None, available: bool | None = None) -> list[Resource]:
    """The resources of the connected platforms (or of `provider`), optionally only (un)available ones."""
    providers = [provider] if provider else connected_providers(session)
    found = [r for p in providers for r in platform_resources(session, p)]
    return [r for r in found if available is None or r.available == available]


def get_resource(session: Session, provider: str, resource_id: str, live: bool = True) -> Resource:
    """One resource of a connected platform (see `platform_resources` for `live`); `Refused`
    (RESOURCE_UNAVAILABLE) when it has none by that id."""
    for resource in platform_resources(session, provider, live):
        if resource.id == resource_id:
            return resource
    raise Refused(RESOURCE_UNAVAILABLE, f"{provider} has no resource {resource_id!r}",
                  {"provider": provider, "resource_id": resource_id})


def availability(resource: Resource) -> Availability:
    """Whether it can run now, how many runs wait in its pool, and how long they take to clear (their count x
    the mean measured run time of the pool's recent runs, over its online workers)."""
    queued, mean_seconds = runs.pool_queue(resource.pool)
    if queued == 0 and resource.available:
        wait: float | None = 0.0
    elif mean_seconds is None or not resource.available:
        wait = None
    else:
        wait = round(queued * mean_seconds / max(runs.online_workers(resource.pool), 1) / 60, 1)
    return Availability(available=resource.available, queue_length=queued, estimated_wait_minutes=wait)
