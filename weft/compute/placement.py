"""Where a workflow's flow run goes and what it costs. A workflow that names `provider` and `resource_id`
runs on that resource's pool; any other runs on its type's preferred pool with an online worker. Either
way the choice is recorded with the resource's price then (`Placement`), so an estimate at creation and
the cost after the run (its measured run time x that price) do not move when prices change."""

from __future__ import annotations

import math
from typing import Any

from sqlmodel import Session

from weft import pools, runs
from weft.compute.catalog import get_platform
from weft.compute.resources import LOCAL_POOLS, get_resource
from weft.errors import Invalid, NotFound
from weft.schemas.platforms import Resource
from weft.specs import WorkflowType
from weft.statuses import TERMINAL
from weft.tables import Placement, Workflow

OWN_POOLS = {pool: resource_id for resource_id, pool in LOCAL_POOLS.items()}


def chosen_resource(session: Session, spec: dict[str, Any]) -> Resource | None:
    """The resource a spec names with `provider` and `resource_id` (None when it names none, or only the
    `local` platform: weft's preferred local pool then); `Invalid` for a resource without its provider or
    another provider without a resource, `Refused` (PLATFORM_NOT_CONNECTED, RESOURCE_UNAVAILABLE) for one it
    cannot use."""
    provider, resource_id = spec.get("provider"), spec.get("resource_id")
    if not provider:
        if resource_id:
            raise Invalid("resource_id needs its provider (GET /api/v1/resources lists both)",
                          [{"field": "provider", "message": "required with resource_id"}])
        return None
    try:
        platform = get_platform(provider)
    except NotFound as exc:
        raise Invalid(exc.message, [{"field": "provider", "message": exc.message}]) from exc
    if resource_id:
        return get_resource(session, provider, resource_id, live=False)  # placing needs its pool and price only
    if platform.kind == "local":
        return None
    raise Invalid(f"resource_id is required with provider {provider!r} (GET /api/v1/resources?provider={provider} "
                  "lists them)", [{"field": "resource_id", "message": "required"}])


def place(session: Session, wt: WorkflowType, wf: Workflow, spec: dict[str, Any]) -> tuple[str | None, str | None]:
    """The pool `wf` runs on (None: `wt` has one deployment) and a note when it is not the preferred one;
    records the placement of a workflow that runs on a pool. Raises `Refused` (PLATFORM_NOT_CONNECTED,
    RESOURCE_UNAVAILABLE) for a resource it cannot run on."""
    if resource := chosen_resource(session, spec):
        provider, resource_id = resource.provider, resource.id
        pool, note = resource.pool, None
        if pool not in OWN_POOLS and wt.pools:  # an added cluster or a cloud: the flow's deployment on its pool
            runs.copy_deployment(wt.deployment_on(wt.pools[0]), pool, f"{wt.title} on the {pool} pool.")
    elif wt.pools:
        pool, note = runs.pick_pool(wt.pools)
        provider, resource_id = "local", OWN_POOLS.get(pool, pool)
        resource = get_resource(session, "local", resource_id, live=False) if pool in OWN_POOLS else None
    else:
        return None, None
    pricing = resource.pricing if resource else None
    session.merge(Placement(workflow_id=wf.id, provider=provider, resource_id=resource_id, pool_name=pool,
                            **(pricing.model_dump() if pricing else {})))
    return pool, note


def cost(placement: Placement | None, seconds: float | None) -> float | None:
    """What `seconds` on the placed resource cost: rounded up to its billing increment, at least its
    minimum charge; None where the resource has no price or the run has not run."""
    if placement is None or placement.hourly_rate is None or seconds is None:
        return None
    billed = math.ceil(seconds / placement.billing_increment) * placement.billing_increment
    return round(max(placement.minimum_charge, billed / 3600 * placement.hourly_rate), 4)


def on_gpu(placement: Placement | None) -> bool:
    """Whether the placed pool is a GPU one (anything but weft's own CPU pools)."""
    return placement is not None and placement.pool_name not in (pools.CPU, pools.LIGHT)


def run_cost(session: Session, wf: Workflow) -> tuple[float | None, float | None]:
    """A finished workflow's measured run time (seconds) and what it cost; (None, None) before it ends."""
    if wf.status not in TERMINAL or not wf.flow_run_id:
        return None, None
    seconds = runs.run_seconds(wf.flow_run_id)
    return seconds, cost(session.get(Placement, wf.id), seconds)
