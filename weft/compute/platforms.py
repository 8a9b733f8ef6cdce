"""Connecting weft to compute platforms. `local` is always connected (weft's own pools), `kubernetes` is
connected once a Kubernetes cluster was added (the add_cluster workflow), and a GPU cloud is connected by
its API key: stored as a Prefect Secret block, checked against the cloud's API, then given a work pool
with the training deployment on it, whose workers run on the cloud's machines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from sqlmodel import Session, select

from weft import pools, runs
from weft.clock import utcnow
from weft.compute.catalog import PlatformDef, api_url, get_platform, platforms
from weft.errors import Invalid, Refused, Unavailable, UpstreamError
from weft.schemas.platforms import PlatformView
from weft.secret_blocks import block_name, remove_secret, save_secret
from weft.specs.names import WorkflowName
from weft.statuses import PlatformStatus
from weft.tables import Cluster, PlatformConnection

VERIFY_TIMEOUT_SECONDS = 15.0
TRAINING_TEMPLATE = f"{WorkflowName.FINE_TUNE}/{pools.GPU}"  # copied onto each connected cloud's pool
NOT_CONNECTED = "PLATFORM_NOT_CONNECTED"


def list_platforms(session: Session) -> list[PlatformView]:
    """Every catalog platform with its connection status."""
    rows = {row.name: row for row in session.exec(select(PlatformConnection))}
    clusters = list(session.exec(select(Cluster)))
    views = []
    for p in platforms():
        view = PlatformView(name=p.name, display_name=p.display_name, features=p.features,
                            status=PlatformStatus.DISCONNECTED)
        if p.kind == "local":
            own = [c for c in clusters if c.pool_name in (pools.CPU, pools.GPU, pools.LIGHT)]
            view.status, view.pools = PlatformStatus.CONNECTED, sorted(c.pool_name for c in own)
            view.last_verified = max((_reported(c) for c in own if _reported(c)), default=None)
        elif p.kind == "kubernetes":
            kube = [c for c in clusters if c.pool_type == "kubernetes"]
            view.pools = sorted(c.pool_name for c in kube)
            view.status = PlatformStatus.CONNECTED if kube else PlatformStatus.DISCONNECTED
        elif row := rows.get(p.name):
            view.status, view.reason, view.last_verified = row.status, row.reason, row.last_verified
            view.pools = [row.pool_name] if row.status == PlatformStatus.CONNECTED else []
        views.append(view)
    return views


def _reported(cluster: Cluster) -> datetime | None:
    at = (cluster.hardware or {}).get("reported_at")
    return datetime.fromisoformat(at).replace(tzinfo=None) if at else None


def cloud(name: str) -> PlatformDef:
    """The GPU cloud `name`; `Invalid` for local and kubernetes, which connect otherwise."""
    platform = get_platform(name)
    if platform.kind == "local":
        raise Invalid("the local platform is always connected: it is weft's own work pools")
    if platform.kind == "kubernetes":
        raise Invalid("Kubernetes connects through the add_cluster workflow (POST /api/v1/clusters with a "
                      "kubeconfig); DELETE the cluster to disconnect it")
    return platform


def verify(platform: PlatformDef, api_key: str) -> None:
    """Ask the cloud's API whether the key is good; `UpstreamError` (PLATFORM_NOT_CONNECTED) with the
    cloud's own message when it refuses it or cannot be reached."""
    url = api_url(platform) + platform.api.verify_path  # type: ignore[union-attr]  (clouds have an api)
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
                             timeout=VERIFY_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{platform.display_name}'s API at {url} could not be reached: {exc}",
                            {"platform": platform.name, "url": url}, code=NOT_CONNECTED) from exc
    if response.is_success:
        return
    raise UpstreamError(f"{platform.display_name} refused the credentials: {provider_message(response)}",
                        {"platform": platform.name, "url": url, "provider_status": response.status_code},
                        code=NOT_CONNECTED)


def provider_message(response: httpx.Response) -> str:
    """The message in a provider's error answer (`error.message`, `message`, `error`, or its text)."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str):
                return body[key]
    return str(body)[:300]


def connect(session: Session, user_id: str, name: str, credentials: dict[str, Any]) -> PlatformConnection:
    """Verify the key, keep it in a Secret block and create the platform's work pool with the training
    deployment; a failed check is recorded as `error` with its reason, then raised."""
    platform = cloud(name)
    api_key = credentials.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        raise Invalid("credentials.api_key is required", [{"field": "credentials.api_key", "message": "required"}])
    row = session.get(PlatformConnection, name) or PlatformConnection(name=name, pool_name=name)
    row.connected_by, row.updated_at = user_id, utcnow()
    try:
        verify(platform, api_key)
    except UpstreamError as exc:
        row.status, row.reason = PlatformStatus.ERROR, exc.message
        session.add(row)
        session.commit()
        raise
    row.secret_block = block_name("platform", name)
    save_secret(row.secret_block, api_key)
    try:
        runs.ensure_work_pool(row.pool_name, platform.pool_type, f"weft: {platform.display_name} machines "
                              f"(start workers there with `weft worker --pool {row.pool_name}`)")
        runs.copy_deployment(TRAINING_TEMPLATE, row.pool_name, f"Fine-tune on {platform.display_name}.")
    except Exception as exc:
        remove_secret(row.secret_block)
        raise Unavailable(f"could not create the {row.pool_name} work pool in Prefect: {exc}") from exc
    row.status, row.reason, row.last_verified = PlatformStatus.CONNECTED, None, utcnow()
    session.add(row)
    session.commit()
    return row


def disconnect(session: Session, name: str) -> None:
    """Remove the platform's work pool (and its deployments), its Secret block and its record."""
    cloud(name)
    row = session.get(PlatformConnection, name)
    if row is None:
        raise Refused(NOT_CONNECTED, f"platform {name} is not connected", {"platform": name})
    try:
        runs.remove_work_pool(row.pool_name)
    except Exception as exc:
        raise Unavailable(f"could not remove the {row.pool_name} work pool from Prefect: {exc}") from exc
    if row.secret_block:
        remove_secret(row.secret_block)
    session.delete(row)
    session.commit()


def connected_pool(session: Session, name: str) -> str:
    """The work pool of a connected cloud; `Refused` (PLATFORM_NOT_CONNECTED) otherwise."""
    row = session.get(PlatformConnection, name)
    if row is None or row.status != PlatformStatus.CONNECTED:
        raise Refused(NOT_CONNECTED, f"platform {name} is not connected: POST /api/v1/platforms/{name}/connect",
                      {"platform": name})
    return row.pool_name
