"""An endpoint's desired state, the one place it changes: its revisions (`v1`, `v2`, ...), the traffic
split over them, the replica bounds, and the event log of what changed and why. The deploy flow, the
API and the retrain chain call these; the controller (weft/serving/controller.py) makes it true."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from weft.clock import utcnow
from weft.errors import Invalid, NotFound
from weft.ids import slug_of
from weft.serving.urls import endpoint_url
from weft.statuses import EndpointStatus, ReplicaState, RevisionStatus
from weft.tables import Endpoint, EndpointEvent, Replica, Revision

log = logging.getLogger("weft.endpoints")
LIVE = (ReplicaState.STARTING, ReplicaState.HEALTHY)  # replicas that count towards a revision's desired number


def record(session: Session, endpoint_id: str, action: str, reason: str, version: str | None = None,
           replica_id: str | None = None) -> EndpointEvent:
    """Append one event to the endpoint's log (committed by the caller) and log it."""
    event = EndpointEvent(endpoint_id=endpoint_id, version=version, action=action, reason=reason,
                          replica_id=replica_id)
    session.add(event)
    log.info("endpoint %s%s: %s (%s)", endpoint_id, f" {version}" if version else "", action, reason)
    return event


def event_data(endpoint: Endpoint, **extra: Any) -> dict[str, Any]:
    """The payload of a `deployment.*` webhook event about `endpoint`, with `extra` fields."""
    return {"deployment_id": endpoint.id, "name": endpoint.name, "endpoint_name": endpoint.name,
            "endpoint_url": endpoint_url(endpoint), "model_id": endpoint.model_id, "status": endpoint.status,
            "kind": endpoint.kind, **extra}


def unique_slug(session: Session, name: str, endpoint_id: str | None = None) -> str:
    """`name`'s slug, suffixed -2, -3, ... when another endpoint has it."""
    base = slug = slug_of(name)
    n = 2
    while (other := session.exec(select(Endpoint).where(Endpoint.slug == slug)).first()) and other.id != endpoint_id:
        slug, n = f"{base}-{n}", n + 1
    return slug


def endpoint_named(session: Session, name: str) -> Endpoint | None:
    """The endpoint a `model` value or URL names: its display name, else its slug."""
    return (session.exec(select(Endpoint).where(Endpoint.name == name)).first()
            or session.exec(select(Endpoint).where(Endpoint.slug == name)).first())


def revisions(session: Session, endpoint_id: str) -> list[Revision]:
    return list(session.exec(select(Revision).where(Revision.endpoint_id == endpoint_id)
                             .order_by(col(Revision.number))))


def revision_named(session: Session, endpoint: Endpoint, version: str) -> Revision:
    """The revision `v<n>` of the endpoint; NotFound for one it does not have."""
    for rev in revisions(session, endpoint.id):
        if rev.version == version:
            return rev
    raise NotFound(f"endpoint {endpoint.name} has no version {version!r}",
                   {"version": version, "versions": [r.version for r in revisions(session, endpoint.id)]})


def current(session: Session, endpoint_id: str) -> Revision | None:
    """The revision with the most traffic (the newest among equals)."""
    revs = [r for r in revisions(session, endpoint_id) if r.traffic > 0]
    return max(revs, key=lambda r: (r.traffic, r.number)) if revs else None


def add_revision(session: Session, endpoint: Endpoint, model_id: str, workflow_id: str | None,
                 changes: str | None = None) -> Revision:
    """The revision a deploy workflow adds (the same one when the workflow runs again)."""
    if workflow_id and (rev := session.exec(select(Revision).where(Revision.workflow_id == workflow_id)).first()):
        if rev.status == RevisionStatus.FAILED:  # the deploy is retried: its revision deploys again
            rev.status, rev.failures, rev.next_start_at, rev.updated_at = RevisionStatus.DEPLOYING, 0, None, utcnow()
            session.add(rev)
            record(session, endpoint.id, "revision_retried", "its deploy workflow runs again", rev.version)
        return rev
    number = (session.exec(select(func.max(Revision.number)).where(Revision.endpoint_id == endpoint.id)).one() or 0) + 1
    rev = Revision(endpoint_id=endpoint.id, number=number, model_id=model_id, workflow_id=workflow_id,
                   changes=changes or f"model {model_id}")
    session.add(rev)
    record(session, endpoint.id, "revision_added", rev.changes, rev.version)
    return rev


def version_of_workflow(session: Session, endpoint_id: str, workflow_id: str) -> str:
    """The version a deploy workflow adds: its revision's, or the next number while it has none yet."""
    if rev := session.exec(select(Revision).where(Revision.workflow_id == workflow_id)).first():
        return rev.version
    number = session.exec(select(func.max(Revision.number)).where(Revision.endpoint_id == endpoint_id)).one() or 0
    return f"v{number + 1}"


def set_traffic(session: Session, endpoint: Endpoint, split: dict[str, int], reason: str) -> list[Revision]:
    """Route `split` (version → percent, summing to 100) of the endpoint's requests; every other revision
    gets 0 % (its replicas drain). Invalid for unknown or failed versions or a bad sum."""
    if sum(split.values()) != 100 or any(p < 0 for p in split.values()):
        raise Invalid(f"traffic percentages must be >= 0 and sum to 100, not {split}",
                      [{"field": "traffic", "message": "percentages >= 0 summing to 100"}])
    revs = revisions(session, endpoint.id)
    known = {r.version: r for r in revs}
    for version in split:
        if version not in known:
            raise Invalid(f"endpoint {endpoint.name} has no version {version!r}",
                          [{"field": f"traffic.{version}", "message": f"not one of {sorted(known)}"}])
        if known[version].status == RevisionStatus.FAILED and split[version] > 0:
            raise Invalid(f"version {version} failed to deploy: it cannot take traffic",
                          [{"field": f"traffic.{version}", "message": "a failed revision"}])
    now = utcnow()
    for rev in revs:
        share = split.get(rev.version, 0)
        if share != rev.traffic:
            rev.traffic, rev.traffic_changed_at, rev.updated_at = share, now, now
            if share and rev.replicas == 0:  # a revision that drained away comes back at its minimum
                rev.replicas, rev.scaled_at = max(1, endpoint.min_instances), now
            rev.status = RevisionStatus.ACTIVE if share else (
                RevisionStatus.INACTIVE if rev.status != RevisionStatus.FAILED else rev.status)
            session.add(rev)
    top = max((r for r in revs if r.traffic), key=lambda r: (r.traffic, r.number))
    endpoint.model_id, endpoint.engine, endpoint.pool, endpoint.plan = top.model_id, top.engine, top.pool, top.plan
    endpoint.updated_at = now
    session.add(endpoint)
    record(session, endpoint.id, "traffic", f"{', '.join(f'{v} {p}%' for v, p in split.items() if p)}: {reason}")
    return revs


def set_bounds(session: Session, endpoint: Endpoint, min_instances: int | None, max_instances: int | None) -> None:
    """New replica bounds for every revision with traffic (the controller scales into them)."""
    low = endpoint.min_instances if min_instances is None else min_instances
    high = endpoint.max_instances if max_instances is None else max_instances
    if low > high:
        raise Invalid(f"min_instances ({low}) must not exceed max_instances ({high})",
                      [{"field": "min_instances", "message": f"{low} > max_instances {high}"},
                       {"field": "max_instances", "message": f"{high} < min_instances {low}"}])
    endpoint.min_instances, endpoint.max_instances = low, high
    session.add(endpoint)


def initial_replicas(endpoint: Endpoint, planned: int) -> int:
    """Replicas a new revision starts with: the plan within the bounds, at least one (so the deploy can
    check that it serves; an endpoint with min_instances 0 scales to zero once idle)."""
    return max(1, endpoint.min_instances, min(planned, endpoint.max_instances))


def live_replicas(session: Session, revision_id: str) -> list[Replica]:
    return list(session.exec(select(Replica).where(Replica.revision_id == revision_id,
                                                   col(Replica.state).in_(LIVE))))


def converged(session: Session, endpoint: Endpoint) -> bool:
    """Every revision runs as many healthy replicas as it wants, and no replica is draining."""
    for rev in revisions(session, endpoint.id):
        states = [r.state for r in session.exec(select(Replica).where(
            Replica.revision_id == rev.id, col(Replica.state).in_([*LIVE, ReplicaState.DRAINING])))]
        wanted = rev.replicas if rev.traffic or rev.status == RevisionStatus.DEPLOYING else 0
        if states.count(ReplicaState.HEALTHY) != wanted or len(states) != wanted:
            return False
    return True


def mark_updating(session: Session, endpoint: Endpoint, reason: str) -> None:
    """The endpoint's desired state changed: `updating` until the controller has converged."""
    if endpoint.status in (EndpointStatus.ACTIVE, EndpointStatus.UPDATING):
        endpoint.status, endpoint.updated_at = EndpointStatus.UPDATING, utcnow()
        session.add(endpoint)
    record(session, endpoint.id, "updated", reason)


def versions_view(session: Session, endpoint: Endpoint) -> list[dict[str, Any]]:
    """Document 001's versions, newest first, with the traffic and replica counts behind them."""
    top = current(session, endpoint.id)
    out = []
    for rev in reversed(revisions(session, endpoint.id)):
        live = live_replicas(session, rev.id)
        out.append({"version": rev.version, "id": rev.id, "created_at": rev.created_at, "status": rev.status,
                    "is_current": top is not None and rev.id == top.id, "changes": rev.changes,
                    "model_id": rev.model_id, "engine": rev.engine, "traffic_percent": rev.traffic,
                    "desired_replicas": rev.replicas,
                    "healthy_replicas": sum(r.state == ReplicaState.HEALTHY for r in live)})
    return out
