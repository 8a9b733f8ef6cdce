"""Serving tasks: the deploy gate and endpoint record, the replica plan, replica flow runs, health."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.deployments import run_deployment
from pydantic import BaseModel
from sqlmodel import Session

from tasks.common import step_options
from weft import pools, runs
from weft.clock import utcnow
from weft.db import get_engine, session_scope
from weft.ids import endpoint_id_of, replica_id_of
from weft.serving import placement
from weft.serving.plan import Plan, plan_replicas
from weft.settings import get_settings
from weft.specs.names import WorkflowName
from weft.specs.serving import DeploySpec, admit_deploy
from weft.statuses import TERMINAL, EndpointStatus, ReplicaState, WorkflowStatus
from weft.tables import CloudModel, Endpoint, Model, Provider, Replica
from weft.webhooks.outbox import emit


class NewEndpoint(BaseModel):
    endpoint_id: str
    proxy: bool  # a cloud model's endpoint forwards to its provider: no replicas


@task(**step_options("validate_deployment"))
def validate_deployment(spec: DeploySpec, workflow_id: str, owner_id: str) -> NewEndpoint:
    """Check the deploy gate again (a run started from the UI skips the API) and create the endpoint."""
    endpoint_id = endpoint_id_of(workflow_id)
    with Session(get_engine()) as s:
        admit_deploy(s, spec.model_dump())
        model = s.get(Model, spec.model_id)
        endpoint = s.get(Endpoint, endpoint_id) or Endpoint(id=endpoint_id, user_id=owner_id, model_id=model.id,
                                                            name=spec.endpoint_name, workflow_id=workflow_id)
        endpoint.config, endpoint.status = spec.deploy_config.model_dump(), EndpointStatus.DEPLOYING
        if model.provider_type == "cloud_model":
            cloud = s.get(CloudModel, model.cloud_model_id) if model.cloud_model_id else None
            provider = s.get(Provider, model.provider_id) if model.provider_id else None
            endpoint.kind, endpoint.engine = "proxy", provider.name if provider else None
            endpoint.proxy_url = provider.base_url if provider else None
            endpoint.proxy_model = (cloud.uri if cloud else model.uri or model.name).split("/", 1)[-1]
            endpoint.credential_id = spec.credential_id
        s.add(endpoint)
        s.commit()
        proxy = endpoint.kind == "proxy"
    get_run_logger().info("endpoint %s (%s) for model %s", spec.endpoint_name, endpoint_id, spec.model_id)
    return NewEndpoint(endpoint_id=endpoint_id, proxy=proxy)


@task(**step_options("plan_deployment"))
def plan_deployment(endpoint_id: str, spec: DeploySpec) -> Plan:
    """Replica count and pool from deploy_config and the model's memory estimate."""
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
        endpoint = s.get(Endpoint, endpoint_id)
        endpoint.plan, endpoint.pool, endpoint.engine = {**plan.model_dump(), "pool": pool}, pool, plan.engine
        s.add(endpoint)
    get_run_logger().info("plan: %d replica(s) on pool %s: %s", plan.replicas, pool, plan.reason)
    return plan


@task(**step_options("start_replicas"))
def start_replicas(endpoint_id: str, count: int, workflow_id: str) -> list[str]:
    """Create `count` replicas, each a serve_replica flow run on the endpoint's pool (idempotent per replica)."""
    with session_scope() as s:
        endpoint = s.get(Endpoint, endpoint_id)
        pool, per_replica = endpoint.pool or pools.CPU, (endpoint.plan or {}).get("per_replica_concurrency", 1)
    ids = []
    for n in range(count):
        replica_id = replica_id_of(workflow_id, n)
        with session_scope() as s:
            if s.get(Replica, replica_id) is None:
                s.add(Replica(id=replica_id, endpoint_id=endpoint_id, max_concurrency=per_replica))
        run = run_deployment(name=f"{WorkflowName.SERVE_REPLICA}/{pool}",
                             parameters={"endpoint_id": endpoint_id, "replica_id": replica_id},
                             timeout=0, idempotency_key=f"weft:replica:{replica_id}", tags=["weft", "replica"],
                             as_subflow=False)
        with session_scope() as s:
            replica = s.get(Replica, replica_id)
            replica.flow_run_id = str(run.id)
            s.add(replica)
        ids.append(replica_id)
    get_run_logger().info("started %d replica run(s) on pool %s", count, pool)
    return ids


@task(**step_options("wait_healthy"))
def wait_healthy(replica_ids: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Until every replica is healthy; a replica run that fails fails this step with its reason."""
    timeout = timeout or get_settings().replica_start_timeout_seconds
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as s:
            replicas = [s.get(Replica, i) for i in replica_ids]
            states = {r.id: (r.state, r.url, r.reason, r.flow_run_id) for r in replicas}
        if all(state == ReplicaState.HEALTHY for state, *_ in states.values()):
            get_run_logger().info("%d replica(s) healthy: %s", len(states), ", ".join(u for _, u, _, _ in states.values()))
            return {i: url for i, (_, url, _, _) in states.items()}
        statuses = runs.run_statuses([f for *_, f in states.values() if f])
        for replica_id, (state, _, reason, flow_run_id) in states.items():
            status, run_reason = statuses.get(flow_run_id, (WorkflowStatus.PENDING, None))
            if state == ReplicaState.UNHEALTHY or status in TERMINAL:
                raise RuntimeError(f"replica {replica_id} did not start: {reason or run_reason or status}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"replicas not healthy after {timeout:.0f} s: {states}")
        time.sleep(1)


@task(**step_options("activate_endpoint"))
def activate_endpoint(endpoint_id: str) -> str:
    with session_scope() as s:
        endpoint = s.get(Endpoint, endpoint_id)
        endpoint.status, endpoint.reason, endpoint.updated_at = EndpointStatus.ACTIVE, None, utcnow()
        s.add(endpoint)
        data = {"deployment_id": endpoint.id, "endpoint_name": endpoint.name, "model_id": endpoint.model_id,
                "status": EndpointStatus.ACTIVE, "kind": endpoint.kind}
        emit(s, "deployment.ready", data, key=f"deployment:{endpoint.id}:ready", user_id=endpoint.user_id)
        emit(s, "model.deployed", data, key=f"model:{endpoint.model_id}:deployed:{endpoint.id}",
             user_id=endpoint.user_id)
    get_run_logger().info("endpoint %s is active", endpoint_id)
    return endpoint_id


@task(**step_options("plan_workers"))
def plan_workers(endpoint_id: str, additional_concurrency: int) -> int:
    """Extra replicas for `additional_concurrency` more concurrent requests at the endpoint's plan."""
    with session_scope() as s:
        endpoint = s.get(Endpoint, endpoint_id)
        per_replica = max(1, (endpoint.plan or {}).get("per_replica_concurrency", 1))
    count = -(-additional_concurrency // per_replica)
    get_run_logger().info("%d more concurrent requests / %d per replica = %d replica(s)", additional_concurrency,
                          per_replica, count)
    return count
