"""Clusters (document 004's multipart add-cluster step, `GET /clusters`). The configuration file goes
into a Prefect Secret block at once and is never stored in the workflow or echoed back."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from sqlmodel import col, or_, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import CurrentUser, SessionDep
from api.errors import ApiError
from api.paging import Listing, arranged, listed
from weft import workflows
from weft.clusters import pool_type_of
from weft.errors import WeftError
from weft.schemas.clusters import ADD_CLUSTER_FORM, ClusterList, ClusterOut
from weft.schemas.workflows import WorkflowOut
from weft.secret_blocks import block_name, remove_secret, save_secret
from weft.specs.names import WorkflowName
from weft.tables import Cluster, new_id

router = APIRouter(tags=["clusters"])
MAX_CONFIG_BYTES = 1_000_000


def cluster_view(cluster: Cluster) -> dict[str, Any]:
    return {"id": cluster.id, "name": cluster.name, "pool_name": cluster.pool_name, "pool_type": cluster.pool_type,
            "icon": cluster.icon, "ingress_url": cluster.ingress_url, "status": cluster.status,
            "hardware": cluster.hardware, "has_configuration": bool(cluster.config_block),
            "created_at": cluster.created_at}


@router.post("/clusters/clusters", response_model=WorkflowOut, openapi_extra={"requestBody": ADD_CLUSTER_FORM})
async def add_cluster_step(request: Request, user: CurrentUser, session: SessionDep) -> dict:
    """multipart: step_number, workflow_total_steps, trigger_workflow, name, icon, ingress_url,
    configuration_file (YAML; a kubeconfig makes a Kubernetes pool)."""
    form = await request.form(max_files=1, max_fields=20)
    fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    upload = form.get("configuration_file")
    body: dict[str, Any] = {k: fields[k] for k in ("workflow_id", "name", "icon", "ingress_url") if k in fields}
    for key in ("step_number", "workflow_total_steps"):
        if key in fields:
            body[key] = int(fields[key]) if fields[key].isdigit() else fields[key]
    body["trigger_workflow"] = fields.get("trigger_workflow", "false").lower() == "true"
    if isinstance(upload, UploadFile):
        content = (await upload.read(MAX_CONFIG_BYTES + 1)).decode("utf-8", errors="replace")
        if len(content) > MAX_CONFIG_BYTES:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", "the configuration file is larger than 1 MB")
        try:
            body["pool_type"] = pool_type_of(content)
        except ValueError as exc:
            raise ApiError(422, "VALIDATION_ERROR", str(exc), {"field": "configuration_file"}) from exc
        body["config_block"] = block_name("cluster", new_id())
        await run_in_threadpool(save_secret, body["config_block"], content)
    else:
        raise ApiError(422, "VALIDATION_ERROR", "a configuration_file (YAML) is required",
                       {"field": "configuration_file"})
    body["pool_name"] = re.sub(r"[^a-z0-9-]+", "-", str(body.get("name", "")).lower()).strip("-")[:50] or "cluster"
    try:
        view = await run_in_threadpool(workflows.post_step, session, user.id, WorkflowName.ADD_CLUSTER, body)
    except WeftError:
        await run_in_threadpool(remove_secret, body["config_block"])  # a refused step leaves no secret behind
        raise
    return view.model_dump(mode="json")


@router.get("/clusters", response_model=ClusterList)
def list_clusters(user: CurrentUser, session: SessionDep, listing: Listing) -> dict:
    """weft's own pools and the caller's clusters, with the hardware their workers reported."""
    rows = session.exec(select(Cluster).where(or_(Cluster.user_id == user.id, col(Cluster.user_id).is_(None)))
                        .order_by(col(Cluster.created_at))).all()
    return listed({"data": arranged([cluster_view(c) for c in rows], listing, ClusterOut), "total": len(rows)}, listing)
