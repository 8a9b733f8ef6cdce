"""Endpoints: document 000's POST /models/{id}/deploy, the endpoint views with their workers, removing
a worker, stopping an endpoint, the deploy templates (deployments: api/routers/deployments.py)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from sqlmodel import col, select

from api.deps import CurrentUser, SessionDep, gateway, get_owned
from api.errors import ApiError
from api.paging import Listing, arranged, listed
from weft.schemas.endpoints import DeployOut, DeployRequest, EndpointList, EndpointOut, TemplateList
from weft.serving import lifecycle
from weft.serving.plan import DeployConfig, Template, templates
from weft.serving.views import base_url, endpoint_view
from weft.tables import Endpoint, Model, Replica

router = APIRouter(tags=["endpoints"])


@router.post("/models/{model_id}/deploy", status_code=202, response_model=DeployOut)
def deploy(model_id: str, body: DeployRequest, user: CurrentUser, session: SessionDep) -> dict:
    """Start a deploy_model workflow; the returned id is the endpoint's (GET /endpoints/{id})."""
    model = get_owned(session, Model, model_id, user.id, "model")
    name = body.endpoint_name or f"{model.name}-{model_id[:8]}"
    if body.endpoint_id:  # a new revision of one of the caller's endpoints, named by id
        name = get_owned(session, Endpoint, body.endpoint_id, user.id, "endpoint").name
    config = (body.deploy_config or DeployConfig()).model_dump(exclude_none=True)
    if body.instance_count:
        config["replicas"] = body.instance_count
    started = lifecycle.start_deploy(
        session, user.id, model, name=name,
        engine=body.endpoint_type, cluster_id=body.cluster_id, instance_type=body.instance_type, config=config,
        auto_scaling=body.auto_scaling.model_dump(exclude_none=True) if body.auto_scaling else None,
        template_id=body.template_id, traffic_percent=body.traffic_percent)
    endpoint, wf = started.endpoint, started.workflow
    return {"id": endpoint.id, "model_id": model_id, "name": endpoint.name, "endpoint_type": started.engine,
            "endpoint_url": f"{base_url()}/v1", "model": endpoint.slug or endpoint.name, "version": started.version,
            "status": endpoint.status, "workflow_id": wf.id,
            "flow_run_id": wf.flow_run_id, "created_at": endpoint.created_at, "updated_at": endpoint.updated_at}


@router.get("/endpoints", response_model=EndpointList)
def list_endpoints(user: CurrentUser, session: SessionDep, listing: Listing, status: str | None = Query(None)) -> dict:
    stmt = select(Endpoint).where(Endpoint.user_id == user.id).order_by(col(Endpoint.created_at).desc())
    if status:
        stmt = stmt.where(Endpoint.status == status)
    rows = session.exec(stmt).all()
    return listed({"data": arranged([endpoint_view(session, e, base_url()) for e in rows], listing, EndpointOut),
                   "total": len(rows)}, listing)


@router.get("/endpoints/{endpoint_id}", response_model=EndpointOut)
def get_endpoint(endpoint_id: str, user: CurrentUser, session: SessionDep) -> dict:
    return endpoint_view(session, get_owned(session, Endpoint, endpoint_id, user.id, "endpoint"), base_url())


@router.delete("/endpoints/{endpoint_id}/workers/{worker_id}", response_model=EndpointOut)
def remove_worker(endpoint_id: str, worker_id: str, user: CurrentUser, session: SessionDep) -> dict:
    """Take one replica out of rotation and cancel its flow run (its server stops with it)."""
    endpoint = get_owned(session, Endpoint, endpoint_id, user.id, "endpoint")
    replica = session.get(Replica, worker_id)
    if replica is None or replica.endpoint_id != endpoint.id:
        raise ApiError(404, "NOT_FOUND", f"worker {worker_id} not found", {"worker_id": worker_id})
    lifecycle.stop_replica(session, replica)
    session.commit()
    return endpoint_view(session, endpoint, base_url())


@router.delete("/endpoints/{endpoint_id}", response_model=EndpointOut)
def stop_endpoint(endpoint_id: str, user: CurrentUser, session: SessionDep, request: Request) -> dict:
    """Stop the endpoint: requests get 503 at once, its replicas drain and the controller stops them
    (`stopping`, then `stopped`)."""
    endpoint = get_owned(session, Endpoint, endpoint_id, user.id, "endpoint")
    lifecycle.stop(session, endpoint)
    session.commit()
    gateway(request).forget(endpoint.id)
    return endpoint_view(session, endpoint, base_url())


@router.get("/templates", response_model=TemplateList)
def list_templates(user: CurrentUser, listing: Listing) -> dict:
    return listed({"data": arranged([t.model_dump() for t in templates().values()], listing, Template)}, listing)
