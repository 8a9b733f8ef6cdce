"""Endpoints (deployments): document 000's POST /models/{id}/deploy, the endpoint and deployment
views with their workers, removing a worker, stopping an endpoint, the deploy templates."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import func
from sqlmodel import Session, col, select

from api.deps import CurrentUser, SessionDep, get_owned
from api.errors import ApiError
from api.schemas.endpoints import (
    DeploymentList,
    DeploymentOut,
    DeploymentUpdate,
    DeploymentUpdated,
    DeployOut,
    DeployRequest,
    EndpointList,
    EndpointOut,
    RollbackRequest,
    TemplateList,
    VersionList,
)
from weft import runs, workflows
from weft.clock import utcnow
from weft.ids import endpoint_id_of, new_id
from weft.serving import placement, revisions
from weft.serving.plan import DeployConfig, templates
from weft.serving.rotation import observed_state
from weft.settings import get_settings
from weft.specs.names import WorkflowName
from weft.statuses import TERMINAL, EndpointStatus, ReplicaState, RunStatus, WorkflowStatus
from weft.tables import Endpoint, EndpointEvent, InferenceRecord, Model, Replica
from weft.webhooks.outbox import emit

router = APIRouter(tags=["endpoints"])
EVENTS_SHOWN = 50  # the newest controller actions and changes in an endpoint view


def worker_view(replica: Replica) -> dict[str, Any]:
    return {"id": replica.id, "revision_id": replica.revision_id, "state": observed_state(replica), "url": replica.url, "engine": replica.engine,
            "flow_run_id": replica.flow_run_id, "max_concurrency": replica.max_concurrency,
            "last_seen": replica.last_seen, "reason": replica.reason, "created_at": replica.created_at}


def usage(session: Session, endpoint_id: str) -> dict[str, Any]:
    """Measured from the gateway's records of the last hour."""
    since = utcnow() - timedelta(hours=1)
    count, avg, ok = session.exec(select(func.count(), func.avg(InferenceRecord.latency_ms),
                                         func.sum(col(InferenceRecord.status_code) < 400))
                                  .where(InferenceRecord.endpoint_id == endpoint_id,
                                         InferenceRecord.created_at >= since)).one()
    return {"requests_last_hour": count, "requests_per_minute": round(count / 60, 2),
            "avg_latency_ms": round(avg, 1) if avg is not None else None,
            "success_rate": round((ok or 0) / count, 4) if count else None}


def endpoint_view(session: Session, endpoint: Endpoint, base_url: str = "") -> dict[str, Any]:
    replicas = session.exec(select(Replica).where(Replica.endpoint_id == endpoint.id)
                            .order_by(col(Replica.created_at))).all()
    return {"id": endpoint.id, "name": endpoint.name, "model_id": endpoint.model_id, "status": endpoint.status,
            "kind": endpoint.kind, "endpoint_type": endpoint.engine, "pool": endpoint.pool,
            "endpoint_url": f"{base_url}/v1", "model": endpoint.slug or endpoint.name, "slug": endpoint.slug,
            "deploy_config": endpoint.config, "min_instances": endpoint.min_instances,
            "max_instances": endpoint.max_instances, "target_concurrency": endpoint.target_concurrency,
            "timeout_seconds": endpoint.timeout_seconds, "versions": revisions.versions_view(session, endpoint),
            "events": [e.model_dump() for e in session.exec(
                select(EndpointEvent).where(EndpointEvent.endpoint_id == endpoint.id)
                .order_by(col(EndpointEvent.id).desc()).limit(EVENTS_SHOWN))],
            "plan": endpoint.plan, "workflow_id": endpoint.workflow_id, "reason": endpoint.reason,
            "workers": [worker_view(r) for r in replicas], "metrics": usage(session, endpoint.id),
            "created_at": endpoint.created_at, "updated_at": endpoint.updated_at}


def base_url() -> str:
    s = get_settings()
    return f"http://{s.api_host}:{s.api_port}"


@router.post("/models/{model_id}/deploy", status_code=202, response_model=DeployOut)
def deploy(model_id: str, body: DeployRequest, user: CurrentUser, session: SessionDep) -> dict:
    """Start a deploy_model workflow; the returned id is the endpoint's (GET /endpoints/{id})."""
    model = get_owned(session, Model, model_id, user.id, "model")
    try:
        cluster_id = placement.target_cluster(session, user.id, body.cluster_id, body.instance_type)
        engine = placement.deploy_engine(session, model, body.endpoint_type, cluster_id)
    except placement.PlacementError as exc:
        raise ApiError(422, "VALIDATION_ERROR", str(exc), {"field": exc.field}) from exc
    config = (body.deploy_config or DeployConfig()).model_dump(exclude_none=True)
    if body.instance_count:
        config["replicas"] = body.instance_count
    name = body.endpoint_name or f"{model.name}-{model_id[:8]}"
    steps = {1: {"model_id": model_id},  # document 004's local deploy: model, endpoint and config, cluster
             3: {"endpoint_name": name, "template_id": body.template_id, "deploy_config": config,
                 "engine": body.endpoint_type},
             5: {"cluster_id": cluster_id}}
    if body.auto_scaling:
        steps[3]["auto_scaling"] = body.auto_scaling.model_dump(exclude_none=True)
    if body.traffic_percent:
        steps[3]["traffic_percent"] = body.traffic_percent
    wf = workflows.create(session, user.id, WorkflowName.DEPLOY_MODEL, steps, trigger=True, total_steps=5)
    endpoint = revisions.endpoint_named(session, name)
    if endpoint is None:  # the step validation refused another user's name
        endpoint = Endpoint(id=endpoint_id_of(wf.id), user_id=user.id, model_id=model_id, name=name,
                            slug=revisions.unique_slug(session, name), status=EndpointStatus.DEPLOYING,
                            workflow_id=wf.id, config=config, engine=engine)
        session.add(endpoint)
        session.flush()
    session.commit()
    # the flow adds the revision (it may already run); until it has, the answer names the next number
    version = revisions.version_of_workflow(session, endpoint.id, wf.id)
    return {"id": endpoint.id, "model_id": model_id, "name": endpoint.name, "endpoint_type": engine,
            "endpoint_url": f"{base_url()}/v1", "model": endpoint.slug or endpoint.name, "version": version,
            "status": endpoint.status, "workflow_id": wf.id,
            "flow_run_id": wf.flow_run_id, "created_at": endpoint.created_at, "updated_at": endpoint.updated_at}


@router.get("/endpoints", response_model=EndpointList)
def list_endpoints(user: CurrentUser, session: SessionDep, status: str | None = Query(None)) -> dict:
    stmt = select(Endpoint).where(Endpoint.user_id == user.id).order_by(col(Endpoint.created_at).desc())
    if status:
        stmt = stmt.where(Endpoint.status == status)
    rows = session.exec(stmt).all()
    return {"data": [endpoint_view(session, e, base_url()) for e in rows], "total": len(rows)}


@router.get("/endpoints/{endpoint_id}", response_model=EndpointOut)
def get_endpoint(endpoint_id: str, user: CurrentUser, session: SessionDep) -> dict:
    return endpoint_view(session, get_owned(session, Endpoint, endpoint_id, user.id, "endpoint"), base_url())


def deployment_view(session: Session, endpoint: Endpoint) -> dict[str, Any]:
    """Document 003's deployment shape over the endpoint view."""
    view = endpoint_view(session, endpoint, base_url())
    active = endpoint.status == EndpointStatus.ACTIVE
    return {**view, "deployment_id": endpoint.id, "status": RunStatus.RUNNING if active else endpoint.status,
            "endpoint": view["endpoint_url"] if active else None}


@router.get("/deployments", response_model=DeploymentList)
def list_deployments(user: CurrentUser, session: SessionDep, status: str | None = Query(None)) -> dict:
    rows = session.exec(select(Endpoint).where(Endpoint.user_id == user.id).order_by(col(Endpoint.created_at).desc()))
    views = [deployment_view(session, e) for e in rows]
    return {"deployments": [v for v in views if not status or v["status"] == status]}


@router.get("/deployments/{deployment_id}", response_model=DeploymentOut)
def get_deployment(deployment_id: str, user: CurrentUser, session: SessionDep) -> dict:
    return deployment_view(session, get_owned(session, Endpoint, deployment_id, user.id, "deployment"))


def stop_replica(session: Session, replica: Replica) -> None:
    if replica.flow_run_id and replica.state != ReplicaState.STOPPED:
        status = runs.run_statuses([replica.flow_run_id]).get(replica.flow_run_id, (WorkflowStatus.PENDING, None))[0]
        if status not in TERMINAL:
            runs.cancel(replica.flow_run_id)
    replica.state, replica.updated_at = ReplicaState.STOPPED, utcnow()
    session.add(replica)


@router.delete("/endpoints/{endpoint_id}/workers/{worker_id}", response_model=EndpointOut)
def remove_worker(endpoint_id: str, worker_id: str, user: CurrentUser, session: SessionDep) -> dict:
    """Take one replica out of rotation and cancel its flow run (its server stops with it)."""
    endpoint = get_owned(session, Endpoint, endpoint_id, user.id, "endpoint")
    replica = session.get(Replica, worker_id)
    if replica is None or replica.endpoint_id != endpoint.id:
        raise ApiError(404, "NOT_FOUND", f"worker {worker_id} not found", {"worker_id": worker_id})
    stop_replica(session, replica)
    session.commit()
    return endpoint_view(session, endpoint, base_url())


@router.delete("/endpoints/{endpoint_id}", response_model=EndpointOut)
def stop_endpoint(endpoint_id: str, user: CurrentUser, session: SessionDep) -> dict:
    """Stop the endpoint: every replica run is cancelled and requests get 503."""
    endpoint = get_owned(session, Endpoint, endpoint_id, user.id, "endpoint")
    for replica in session.exec(select(Replica).where(Replica.endpoint_id == endpoint.id)).all():
        stop_replica(session, replica)
    endpoint.status, endpoint.updated_at = EndpointStatus.STOPPED, utcnow()
    session.add(endpoint)
    data = {"deployment_id": endpoint.id, "endpoint_name": endpoint.name, "model_id": endpoint.model_id,
            "status": EndpointStatus.STOPPED}
    emit(session, "deployment.stopped", data, key=f"deployment:{endpoint.id}:stopped", user_id=user.id)
    emit(session, "model.undeployed", data, key=f"model:{endpoint.model_id}:undeployed:{endpoint.id}", user_id=user.id)
    session.commit()
    return endpoint_view(session, endpoint, base_url())


def configuration(endpoint: Endpoint) -> dict[str, Any]:
    return {"memory_mb": endpoint.memory_mb, "timeout_seconds": endpoint.timeout_seconds,
            "min_instances": endpoint.min_instances, "max_instances": endpoint.max_instances,
            "target_concurrency": endpoint.target_concurrency}


@router.get("/deployments/{deployment_id}/versions", response_model=VersionList)
def list_versions(deployment_id: str, user: CurrentUser, session: SessionDep) -> dict:
    endpoint = get_owned(session, Endpoint, deployment_id, user.id, "deployment")
    return {"versions": revisions.versions_view(session, endpoint)}


@router.post("/deployments/{deployment_id}/rollback", response_model=DeploymentUpdated)
def rollback_deployment(deployment_id: str, body: RollbackRequest, user: CurrentUser, session: SessionDep) -> dict:
    """All traffic to `version`; the other revisions drain and stop after the drain period."""
    endpoint = get_owned(session, Endpoint, deployment_id, user.id, "deployment")
    revisions.revision_named(session, endpoint, body.version)
    revisions.set_traffic(session, endpoint, {body.version: 100}, f"rolled back to {body.version}")
    revisions.mark_updating(session, endpoint, f"rollback to {body.version}")
    emit(session, "deployment.rolled_back", {"deployment_id": endpoint.id, "version": body.version},
         key=f"deployment:{endpoint.id}:rolled_back:{new_id()}", user_id=user.id)
    session.commit()
    return {"id": endpoint.id, "name": endpoint.name, "status": endpoint.status,
            "configuration": configuration(endpoint), "versions": revisions.versions_view(session, endpoint)}


@router.patch("/deployments/{deployment_id}", response_model=DeploymentUpdated)
def update_deployment(deployment_id: str, body: DeploymentUpdate, user: CurrentUser, session: SessionDep) -> dict:
    """Document 001's update: bounds, timeout, name, traffic split; `updating` until the controller converged."""
    endpoint = get_owned(session, Endpoint, deployment_id, user.id, "deployment")
    revisions.set_bounds(session, endpoint, body.min_instances, body.max_instances)
    if body.name and body.name != endpoint.name:
        if revisions.endpoint_named(session, body.name) is not None:
            raise ApiError(409, "CONFLICT", f"an endpoint named {body.name!r} exists already", {"field": "name"})
        endpoint.name, endpoint.slug = body.name, revisions.unique_slug(session, body.name, endpoint.id)
    if body.timeout_seconds is not None:
        endpoint.timeout_seconds = body.timeout_seconds
    if body.memory_mb is not None:
        endpoint.memory_mb = body.memory_mb
    if body.traffic is not None:
        revisions.set_traffic(session, endpoint, body.traffic, "set by PATCH")
    changed = body.model_dump(exclude_none=True)
    revisions.mark_updating(session, endpoint, f"PATCH {changed}")
    emit(session, "deployment.updated", {"deployment_id": endpoint.id, "changes": changed},
         key=f"deployment:{endpoint.id}:updated:{new_id()}", user_id=user.id)
    session.commit()
    return {"id": endpoint.id, "name": endpoint.name, "status": endpoint.status,
            "configuration": configuration(endpoint), "versions": revisions.versions_view(session, endpoint)}


@router.get("/templates", response_model=TemplateList)
def list_templates(user: CurrentUser) -> dict:
    return {"data": [t.model_dump() for t in templates().values()]}
