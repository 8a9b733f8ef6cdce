"""What the API shows of endpoints: document 000's endpoint with its workers (replicas), revisions and
event log; document 003's deployment over it, with its adapter, platform and measured metrics; document
001's configuration. Every number is measured: the gateway's request records and the replica rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from weft.classic.deployments import model_metadata
from weft.classic.formats import framework_filter
from weft.clock import utcnow
from weft.errors import Invalid
from weft.monitoring.metrics import priced, replica_hours
from weft.serving import revisions
from weft.serving.rotation import observed_state
from weft.serving.urls import base_url, endpoint_url
from weft.statuses import SERVING, EndpointKind, EndpointStatus, ReplicaState, RunStatus
from weft.tables import Endpoint, EndpointEvent, InferenceRecord, Model, Replica

EVENTS_SHOWN = 50  # the newest controller actions and changes in an endpoint view
PLATFORM = "weft"  # document 003's `platform` of an endpoint whose replicas weft runs
USAGE_WINDOW = timedelta(hours=1)
# document 003's status names over weft's: an active endpoint is `running`; document 001 names a classic
# deployment's states building, active, failed and deleted
DEPLOYMENT_STATUS = {EndpointStatus.ACTIVE: RunStatus.RUNNING}
CLASSIC_STATUS = {EndpointStatus.PENDING: "building", EndpointStatus.DEPLOYING: "building",
                  EndpointStatus.STOPPED: "deleted"}
DEPLOYMENT_STATUSES = sorted(str(s) for s in {*EndpointStatus, *DEPLOYMENT_STATUS.values(), *CLASSIC_STATUS.values()})


def worker_view(replica: Replica) -> dict[str, Any]:
    return {"id": replica.id, "revision_id": replica.revision_id, "state": observed_state(replica), "url": replica.url,
            "engine": replica.engine, "flow_run_id": replica.flow_run_id, "max_concurrency": replica.max_concurrency,
            "last_seen": replica.last_seen, "reason": replica.reason, "created_at": replica.created_at}


def request_stats(session: Session, endpoint_id: str, since: datetime | None = None) -> tuple[int, float | None, int]:
    """How many requests the gateway recorded for the endpoint (since `since`), their average latency (ms)
    and how many succeeded."""
    where = [InferenceRecord.endpoint_id == endpoint_id]
    if since is not None:
        where.append(InferenceRecord.created_at >= since)
    count, avg, ok = session.exec(select(func.count(), func.avg(InferenceRecord.latency_ms),
                                         func.sum(case((col(InferenceRecord.status_code) < 400, 1), else_=0)))
                                  .where(*where)).one()
    return count, avg, ok or 0


def usage(session: Session, endpoint_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Requests, their rate, average latency and success rate from the gateway's records of the last hour."""
    count, avg, ok = request_stats(session, endpoint_id, (now or utcnow()) - USAGE_WINDOW)
    return {"requests_last_hour": count, "requests_per_minute": round(count / 60, 2),
            "avg_latency_ms": round(avg, 1) if avg is not None else None,
            "success_rate": round(ok / count, 4) if count else None}


def cost_per_hour(session: Session, endpoint: Endpoint, now: datetime | None = None) -> float:
    """$ per hour over the last hour: the replica-hours the endpoint's replicas ran in it, priced at its
    pool's rate (`pool_hour_cost`). A cloud proxy runs no replicas (its provider bills it): 0."""
    end = now or utcnow()
    hours = USAGE_WINDOW.total_seconds() / 3600
    return round(priced(replica_hours(session, [endpoint], end - USAGE_WINDOW, end)) / hours, 4)


def endpoint_view(session: Session, endpoint: Endpoint, base: str = "") -> dict[str, Any]:
    """Document 000's endpoint: its desired state, revisions, newest events, workers and usage."""
    replicas = session.exec(select(Replica).where(Replica.endpoint_id == endpoint.id)
                            .order_by(col(Replica.created_at))).all()
    serving = [r for r in replicas if r.state == ReplicaState.HEALTHY]
    return {"id": endpoint.id, "name": endpoint.name, "model_id": endpoint.model_id, "status": endpoint.status,
            "kind": endpoint.kind, "endpoint_type": endpoint.engine, "pool": endpoint.pool,
            "engine": serving[-1].engine if serving else endpoint.engine,
            "max_batch": min((r.max_concurrency for r in serving), default=None),
            "endpoint_url": endpoint_url(endpoint, base), "model": endpoint.slug or endpoint.name, "slug": endpoint.slug,
            "deploy_config": endpoint.config, "min_instances": endpoint.min_instances,
            "max_instances": endpoint.max_instances, "target_concurrency": endpoint.target_concurrency,
            "timeout_seconds": endpoint.timeout_seconds, "versions": revisions.versions_view(session, endpoint),
            "events": [e.model_dump() for e in session.exec(
                select(EndpointEvent).where(EndpointEvent.endpoint_id == endpoint.id)
                .order_by(col(EndpointEvent.id).desc()).limit(EVENTS_SHOWN))],
            "plan": endpoint.plan, "workflow_id": endpoint.workflow_id, "reason": endpoint.reason,
            "workers": [worker_view(r) for r in replicas], "metrics": usage(session, endpoint.id),
            "created_at": endpoint.created_at, "updated_at": endpoint.updated_at}


def deployment_status(endpoint: Endpoint) -> str:
    """The status in the words of the document the deployment belongs to: 001 for a classic model, else 003."""
    names = CLASSIC_STATUS if endpoint.kind == EndpointKind.CLASSIC else DEPLOYMENT_STATUS
    return names.get(endpoint.status, endpoint.status)


def metrics_summary(session: Session, endpoint_id: str) -> dict[str, Any]:
    """Document 001's `metrics_summary`: every request the gateway recorded for the deployment."""
    count, avg, ok = request_stats(session, endpoint_id)
    return {"total_predictions": count, "avg_latency_ms": round(avg, 1) if avg is not None else None,
            "error_rate": round((count - ok) / count, 4) if count else 0.0}


def served_url(endpoint: Endpoint) -> str | None:
    """The OpenAI-compatible base URL while the endpoint serves, else None."""
    return f"{base_url()}/v1" if endpoint.status in SERVING else None


def platform_of(endpoint: Endpoint) -> str:
    """Where it runs: weft's own replicas, or the provider a cloud proxy forwards to."""
    return (endpoint.engine or "cloud") if endpoint.kind == "proxy" else PLATFORM


def adapter_of(session: Session, model_id: str) -> str | None:
    """The adapter a fine-tuned model is base + adapter of; None for any other model."""
    model = session.get(Model, model_id)
    return (model.details or {}).get("adapter_id") if model is not None and model.provider_type == "adapter" else None


def deployment_view(session: Session, endpoint: Endpoint) -> dict[str, Any]:
    """Document 003's deployment over the endpoint view: `running` when active, its URL while it serves,
    the adapter it serves, the platform, and metrics with the measured cost per hour."""
    view = endpoint_view(session, endpoint, base_url())
    return {**view, "deployment_id": endpoint.id, "status": deployment_status(endpoint),
            "endpoint": served_url(endpoint),
            "adapter_id": adapter_of(session, endpoint.model_id), "platform": platform_of(endpoint),
            "metrics": {**view["metrics"], "cost_per_hour": cost_per_hour(session, endpoint)},
            "model_metadata": model_metadata(session.get(Model, endpoint.model_id)),
            "configuration": configuration(endpoint), "metrics_summary": metrics_summary(session, endpoint.id)}


def deployments(session: Session, user_id: str, status: str | None = None, framework: str | None = None,
                search: str | None = None, limit: int = 20, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """One page of the user's deployments, newest first, and how many match. `status` is weft's or either
    document's name (`running` and `active` are one status, `building` is deploying, `deleted` stopped;
    Invalid for any other), `framework` the model's (sklearn, pytorch, keras or tensorflow, transformers for
    an LLM), `search` a part of the name."""
    stmt = select(Endpoint).where(Endpoint.user_id == user_id).order_by(col(Endpoint.created_at).desc())
    if status is not None:
        if status not in DEPLOYMENT_STATUSES:
            allowed = ", ".join(DEPLOYMENT_STATUSES)
            raise Invalid(f"unknown status {status!r}: one of {allowed}", [{"field": "status", "message": f"one of {allowed}"}])
        raw = [s for s in EndpointStatus if status in (s, DEPLOYMENT_STATUS.get(s), CLASSIC_STATUS.get(s))]
        stmt = stmt.where(col(Endpoint.status).in_(raw))
    if search:
        stmt = stmt.where(col(Endpoint.name).icontains(search))
    rows = list(session.exec(stmt))
    if framework:
        wanted = framework_filter(framework)
        rows = [e for e in rows if model_metadata(session.get(Model, e.model_id)).get("framework") == wanted]
    return [deployment_view(session, e) for e in rows[offset:offset + limit]], len(rows)


def configuration(endpoint: Endpoint) -> dict[str, Any]:
    """Document 001's `configuration` of a deployment."""
    return {"memory_mb": endpoint.memory_mb, "timeout_seconds": endpoint.timeout_seconds,
            "min_instances": endpoint.min_instances, "max_instances": endpoint.max_instances,
            "target_concurrency": endpoint.target_concurrency}
