"""Serving tasks: the deploy gate, the endpoint and its new revision, the revision's plan, waiting for
the endpoint controller to run it, and routing traffic to it. Replicas are started and replaced by the
controller (weft/serving/controller.py), never here: these tasks change desired state and wait."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel
from sqlmodel import Session, col, select

from tasks.common import step_options
from weft.clock import utcnow
from weft.db import get_engine, session_scope
from weft.ids import endpoint_id_of
from weft.serving import placement, revisions
from weft.serving.plan import Plan, plan_replicas
from weft.settings import get_settings
from weft.specs.serving import DeploySpec, admit_deploy
from weft.statuses import EndpointStatus, ReplicaState, RevisionStatus
from weft.tables import CloudModel, Endpoint, Model, Provider, Replica, Revision
from weft.webhooks.outbox import emit

NO_CONTROLLER_SECONDS = 60.0  # a revision with no replica row after this long: no controller is running


class NewEndpoint(BaseModel):
    endpoint_id: str
    revision_id: str | None  # None for a proxy
    proxy: bool  # a cloud model's endpoint forwards to its provider: no replicas


@task(**step_options("validate_deployment"))
def validate_deployment(spec: DeploySpec, workflow_id: str, owner_id: str) -> NewEndpoint:
    """Check the deploy gate again (a run started from the UI skips the API), then create the endpoint,
    or find the caller's endpoint of that name, and add the revision this deploy runs."""
    with Session(get_engine()) as s:
        admit_deploy(s, spec.model_dump())
        model = s.get(Model, spec.model_id)
        endpoint = revisions.endpoint_named(s, spec.endpoint_name)
        if endpoint is not None and (endpoint.user_id != owner_id or endpoint.kind != "replicas"):
            raise ValueError(f"an endpoint named {spec.endpoint_name!r} exists already")
        created = endpoint is None
        if created:
            endpoint = s.get(Endpoint, endpoint_id_of(workflow_id)) or Endpoint(
                id=endpoint_id_of(workflow_id), user_id=owner_id, model_id=model.id, name=spec.endpoint_name,
                workflow_id=workflow_id)
            endpoint.slug = endpoint.slug or revisions.unique_slug(s, spec.endpoint_name, endpoint.id)
            endpoint.config, endpoint.status = spec.deploy_config.model_dump(), EndpointStatus.DEPLOYING
            emit(s, "deployment.created", revisions.event_data(endpoint), key=f"deployment:{endpoint.id}:created",
                 user_id=owner_id)
        elif endpoint.status in (EndpointStatus.STOPPED, EndpointStatus.FAILED, EndpointStatus.STOPPING):
            endpoint.status = EndpointStatus.DEPLOYING  # a stopped endpoint comes back with the new revision
        revision_id = None
        if model.provider_type == "cloud_model":
            cloud = s.get(CloudModel, model.cloud_model_id) if model.cloud_model_id else None
            provider = s.get(Provider, model.provider_id) if model.provider_id else None
            endpoint.kind, endpoint.engine = "proxy", provider.name if provider else None
            endpoint.proxy_url = provider.base_url if provider else None
            endpoint.proxy_model = (cloud.uri if cloud else model.uri or model.name).split("/", 1)[-1]
            endpoint.credential_id = spec.credential_id
        else:
            s.add(endpoint)
            s.flush()
            revision_id = revisions.add_revision(s, endpoint, model.id, workflow_id,
                                                 f"model {model.name} ({model.id})").id
        s.add(endpoint)
        s.commit()
        proxy = endpoint.kind == "proxy"
        endpoint_id = endpoint.id
    get_run_logger().info("endpoint %s (%s) for model %s%s", spec.endpoint_name, endpoint_id, spec.model_id,
                          "" if created else ": a new revision of an existing endpoint")
    return NewEndpoint(endpoint_id=endpoint_id, revision_id=revision_id, proxy=proxy)


@task(**step_options("plan_deployment"))
def plan_deployment(endpoint_id: str, revision_id: str, spec: DeploySpec) -> Plan:
    """Replica count and pool from deploy_config and the model's memory estimate; the endpoint's replica
    bounds from auto_scaling (else the plan's count, for a new endpoint). The controller starts them."""
    with session_scope() as s:
        pool, note = placement.replica_pool(s, spec.cluster_id)
        device, memory = placement.device_of(s, pool)
        model = s.get(Model, spec.model_id)
        details = dict(model.details or {})
        if model.provider_type == "adapter":
            details = dict((s.get(Model, details.get("base_model_id")) or model).details or {}) | details
    if note:
        get_run_logger().warning(note)
    engine = placement.choose_engine(spec.engine, device)
    plan = plan_replicas(details, spec.deploy_config, engine=engine, device=device, device_memory_gb=memory)
    with session_scope() as s:
        endpoint, rev = s.get(Endpoint, endpoint_id), s.get(Revision, revision_id)
        first = rev.number == 1
        scaling = spec.auto_scaling
        if scaling is not None or first:
            endpoint.min_instances = scaling.min_instances if scaling else plan.replicas
            endpoint.max_instances = scaling.max_instances if scaling else plan.replicas
            endpoint.target_concurrency = (scaling.target_concurrency if scaling and scaling.target_concurrency
                                           else plan.per_replica_concurrency)
        rev.plan, rev.pool, rev.engine = {**plan.model_dump(), "pool": pool}, pool, plan.engine
        if rev.status == RevisionStatus.DEPLOYING and rev.replicas == 0:
            rev.replicas, rev.scaled_at = revisions.initial_replicas(endpoint, plan.replicas), utcnow()
        if first:
            endpoint.plan, endpoint.pool, endpoint.engine = rev.plan, pool, plan.engine
        s.add(endpoint)
        s.add(rev)
        count = rev.replicas
        emit(s, "deployment.building", revisions.event_data(endpoint, version=rev.version, replicas=count, pool=pool),
             key=f"deployment:{endpoint.id}:building:{rev.id}", user_id=endpoint.user_id)
    get_run_logger().info("plan: %d replica(s) on pool %s: %s; the revision starts with %d", plan.replicas, pool,
                          plan.reason, count)
    return plan


@task(**step_options("wait_replicas"))
def wait_replicas(revision_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Until the revision runs the replicas it wants, all healthy (the controller starts them); fails
    with the reason when the revision fails, or names the missing controller when nothing starts."""
    timeout = timeout or get_settings().replica_start_timeout_seconds
    begun = time.monotonic()
    log = get_run_logger()
    seen: set[str] = set()
    while True:
        with session_scope() as s:
            rev = s.get(Revision, revision_id)
            rows = list(s.exec(select(Replica).where(Replica.revision_id == revision_id)
                               .order_by(col(Replica.created_at))))
            wanted, status, version = rev.replicas, rev.status, rev.version
        for r in rows:
            if r.state == ReplicaState.STOPPED and r.id not in seen:
                seen.add(r.id)
                log.warning("replica %s stopped: %s", r.id, r.reason)
        healthy = [r for r in rows if r.state == ReplicaState.HEALTHY]
        live = [r for r in rows if r.state in revisions.LIVE]
        if status == RevisionStatus.FAILED:
            last = next((r.reason for r in reversed(rows) if r.reason), "no reason recorded")
            raise RuntimeError(f"revision {version} failed: its replicas did not start ({last})")
        if len(healthy) >= wanted and len(live) == len(healthy):
            log.info("%s: %d replica(s) healthy: %s", version, len(healthy), ", ".join(r.url or "" for r in healthy))
            return {r.id: r.url for r in healthy}
        waited = time.monotonic() - begun
        if not rows and waited > NO_CONTROLLER_SECONDS:
            raise RuntimeError(f"no replica was started for {version} in {waited:.0f} s: is the endpoint "
                               "controller running? (`weft up` starts one: the endpoint_controller deployment)")
        if waited > timeout:
            raise TimeoutError(f"{version}: {len(healthy)} of {wanted} replicas healthy after {timeout:.0f} s")
        time.sleep(1)


def canary_split(current: dict[str, int], version: str, share: int | None) -> dict[str, int]:
    """The traffic after adding `version`: all of it, or `share` percent with the rest kept by the
    revisions that have traffic now, in proportion (largest remainders get the rounding)."""
    if share is None or share >= 100 or not current:
        return {version: 100}
    rest, total = 100 - share, sum(current.values())
    exact = {v: p * rest / total for v, p in current.items()}
    split = {v: int(x) for v, x in exact.items()}
    for v in sorted(exact, key=lambda v: exact[v] - split[v], reverse=True)[:rest - sum(split.values())]:
        split[v] += 1
    return {**split, version: share}


@task(**step_options("activate_endpoint"))
def activate_endpoint(endpoint_id: str, revision_id: str | None = None, traffic_percent: int | None = None) -> str:
    """Route the new revision its traffic (all of it, or a canary share) and mark the endpoint active."""
    with session_scope() as s:
        endpoint = s.get(Endpoint, endpoint_id)
        update = False
        if revision_id:
            rev = s.get(Revision, revision_id)
            now_split = {r.version: r.traffic for r in revisions.revisions(s, endpoint_id)
                         if r.traffic and r.id != rev.id}
            update = bool(now_split)
            if rev.traffic == 0:  # a step that runs again leaves the split as it set it
                split = canary_split(now_split, rev.version, traffic_percent)
                revisions.set_traffic(s, endpoint, split, "canary" if traffic_percent and now_split else "deployed")
        endpoint.status, endpoint.reason, endpoint.updated_at = EndpointStatus.ACTIVE, None, utcnow()
        s.add(endpoint)
        data = revisions.event_data(endpoint)
        emit(s, "deployment.ready", data, key=f"deployment:{endpoint.id}:ready:{revision_id}", user_id=endpoint.user_id)
        emit(s, "model.deployed", data, key=f"model:{endpoint.model_id}:deployed:{endpoint.id}",
             user_id=endpoint.user_id)
        if update:
            emit(s, "deployment.updated", {**data, "revision_id": revision_id},
                 key=f"deployment:{endpoint.id}:updated:{revision_id}", user_id=endpoint.user_id)
    get_run_logger().info("endpoint %s is active", endpoint_id)
    return endpoint_id


@task(**step_options("plan_workers"))
def plan_workers(endpoint_id: str, additional_concurrency: int) -> str:
    """Raise the endpoint's replica count (its bounds and its current revision's count) by the replicas
    `additional_concurrency` more concurrent requests need at the plan; returns that revision's id."""
    with session_scope() as s:
        endpoint = s.get(Endpoint, endpoint_id)
        rev = revisions.current(s, endpoint_id)
        if rev is None:
            raise ValueError(f"endpoint {endpoint.name} has no revision with traffic")
        per_replica = max(1, (rev.plan or {}).get("per_replica_concurrency", 1))
        count = -(-additional_concurrency // per_replica)
        endpoint.min_instances += count
        endpoint.max_instances = max(endpoint.max_instances, endpoint.min_instances)
        rev.replicas, rev.scaled_at = rev.replicas + count, utcnow()
        revisions.mark_updating(s, endpoint, f"add_worker: {count} more replica(s) for {rev.version}")
        s.add(rev)
        revision_id = rev.id
    get_run_logger().info("%d more concurrent requests / %d per replica = %d replica(s)", additional_concurrency,
                          per_replica, count)
    return revision_id
