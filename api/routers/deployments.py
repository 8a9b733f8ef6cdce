"""Deployments (documents 001 and 003): an endpoint seen as a deployment. Document 003's adapter deploy
and list with measured metrics; document 001's get, versions, rollback, update and delete (of LLM and
classic deployments alike; the classic upload routes are in deploy.py)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from sqlmodel import Session

from api.deps import CurrentUser, SessionDep, gateway, get_owned
from api.errors import ApiError
from api.paging import Listing, arranged, listed
from weft.classic import deployments as classic
from weft.ids import new_id
from weft.schemas.deployments import (
    AdapterDeploymentRequest,
    DeploymentCreated,
    DeploymentDeleted,
    DeploymentList,
    DeploymentOut,
    DeploymentUpdate,
    DeploymentUpdated,
    RollbackRequest,
    VersionList,
)
from weft.serving import lifecycle, revisions, views
from weft.statuses import EndpointKind, EndpointStatus
from weft.tables import Adapter, Endpoint
from weft.webhooks.outbox import emit

router = APIRouter(tags=["deployments"])
EVERY = 2**31  # a limit that takes every row: a sorted list is sorted whole, then cut


@router.post("/deployments", status_code=202, response_model=DeploymentCreated)
def create_deployment(body: AdapterDeploymentRequest, user: CurrentUser, session: SessionDep) -> dict:
    """Document 003: deploy a fine-tuned adapter (its registered base + adapter model) through the
    deploy_model workflow; `endpoint` stays null until it serves (GET /deployments/{id})."""
    adapter = get_owned(session, Adapter, body.adapter_id, user.id, "adapter")
    cfg = body.config
    started = lifecycle.start_adapter_deploy(session, user.id, adapter, name=body.name,
                                             instance_type=cfg.instance_type, min_replicas=cfg.min_replicas,
                                             max_replicas=cfg.max_replicas, auto_scaling=cfg.auto_scaling)
    endpoint, wf = started.endpoint, started.workflow
    estimate = lifecycle.ready_estimate(session, started.cluster_id)
    return {"deployment_id": endpoint.id, "status": EndpointStatus.DEPLOYING,
            "endpoint": views.served_url(endpoint), "estimated_ready_time": estimate.at,
            "estimate_basis": estimate.basis, "adapter_id": adapter.id, "model_id": adapter.model_id,
            "name": endpoint.name, "platform": views.PLATFORM, "version": started.version, "workflow_id": wf.id,
            "flow_run_id": wf.flow_run_id, "created_at": endpoint.created_at}


@router.get("/deployments", response_model=DeploymentList)
def list_deployments(user: CurrentUser, session: SessionDep, listing: Listing,
                     status: str | None = Query(None, description="active (document 003: running), building "
                                                "(deploying), updating, stopping, failed, deleted (stopped)"),
                     framework: str | None = Query(None, description="sklearn, pytorch, keras (or tensorflow), "
                                                   "transformers (an LLM)"),
                     search: str | None = Query(None, max_length=100, description="part of the name"),
                     limit: int = Query(20, ge=1, le=100), offset: int = Query(0, ge=0)) -> dict:
    """Both documents' lists in one envelope: document 001's `items`/`total`/`limit`/`offset` and document
    003's `deployments` (the same page); each item carries both documents' fields. Sorted as asked, the whole
    list is sorted before the page is cut."""
    if listing.sort or listing.order:
        items, total = views.deployments(session, user.id, status, framework, search, limit=EVERY, offset=0)
        items = arranged(items, listing, DeploymentOut)[offset:offset + limit]
    else:
        items, total = views.deployments(session, user.id, status, framework, search, limit, offset)
        items = arranged(items, listing, DeploymentOut)
    return listed({"items": items, "deployments": items, "total": total, "limit": limit, "offset": offset}, listing)


@router.get("/deployments/{deployment_id}", response_model=DeploymentOut)
def get_deployment(deployment_id: str, user: CurrentUser, session: SessionDep) -> dict:
    return views.deployment_view(session, get_owned(session, Endpoint, deployment_id, user.id, "deployment"))


@router.delete("/deployments/{deployment_id}", response_model=DeploymentDeleted)
def delete_deployment(deployment_id: str, user: CurrentUser, session: SessionDep, request: Request) -> dict:
    """Document 001's delete: requests get 503 at once, the replicas drain, then the controller stops them
    (`stopping`, then `stopped`)."""
    endpoint = get_owned(session, Endpoint, deployment_id, user.id, "deployment")
    lifecycle.stop(session, endpoint)
    session.commit()
    gateway(request).forget(endpoint.id)
    message = ("Deployment deleted successfully" if endpoint.status == EndpointStatus.STOPPED
               else "Deployment deleted: its replicas drain, then stop")
    return {"message": message, "id": endpoint.id, "status": endpoint.status}


@router.get("/deployments/{deployment_id}/versions", response_model=VersionList)
def list_versions(deployment_id: str, user: CurrentUser, session: SessionDep) -> dict:
    endpoint = get_owned(session, Endpoint, deployment_id, user.id, "deployment")
    return {"versions": revisions.versions_view(session, endpoint)}


def updated(session: Session, endpoint: Endpoint) -> dict:
    return {"id": endpoint.id, "name": endpoint.name, "status": endpoint.status,
            "configuration": views.configuration(endpoint), "versions": revisions.versions_view(session, endpoint)}


@router.post("/deployments/{deployment_id}/rollback", response_model=DeploymentUpdated)
def rollback_deployment(deployment_id: str, body: RollbackRequest, user: CurrentUser, session: SessionDep,
                        request: Request) -> dict:
    """All traffic to `version`; the other revisions drain and stop after the drain period."""
    endpoint = get_owned(session, Endpoint, deployment_id, user.id, "deployment")
    revisions.revision_named(session, endpoint, body.version)
    revisions.set_traffic(session, endpoint, {body.version: 100}, f"rolled back to {body.version}")
    revisions.mark_updating(session, endpoint, f"rollback to {body.version}")
    emit(session, "deployment.rolled_back", {"deployment_id": endpoint.id, "version": body.version},
         key=f"deployment:{endpoint.id}:rolled_back:{new_id()}", user_id=user.id)
    session.commit()
    gateway(request).forget(endpoint.id)
    return updated(session, endpoint)


@router.patch("/deployments/{deployment_id}", response_model=DeploymentUpdated)
def update_deployment(deployment_id: str, body: DeploymentUpdate, user: CurrentUser, session: SessionDep,
                      request: Request) -> dict:
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
    if endpoint.kind == EndpointKind.CLASSIC and (body.memory_mb or body.timeout_seconds):
        classic.restart_for_limits(session, endpoint)  # the server processes take the limits as they start
    if body.traffic is not None:
        revisions.set_traffic(session, endpoint, body.traffic, "set by PATCH")
    changed = body.model_dump(exclude_none=True)
    revisions.mark_updating(session, endpoint, f"PATCH {changed}")
    emit(session, "deployment.updated", {"deployment_id": endpoint.id, "changes": changed},
         key=f"deployment:{endpoint.id}:updated:{new_id()}", user_id=user.id)
    session.commit()
    gateway(request).forget(endpoint.id)
    return updated(session, endpoint)
