"""An endpoint's life as the API drives it: starting a deploy (document 000's model deploy, document 003's
adapter deploy) as a deploy_model workflow, when a new endpoint should be ready (from measured deploys),
and stopping it (out of rotation at once, replicas drain, then the controller stops them). Functions take
the session and raise `weft.errors`; the caller commits where it says so."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from weft import runs, workflows
from weft.clock import as_utc, utcnow
from weft.errors import Conflict, Invalid, NotFound
from weft.ids import endpoint_id_of, slug_of
from weft.serving import placement, revisions
from weft.serving.plan import Engine
from weft.settings import get_settings
from weft.specs.names import WorkflowName
from weft.statuses import TERMINAL, EndpointStatus, ReplicaState, RevisionStatus, WorkflowStatus
from weft.tables import Adapter, Endpoint, EndpointEvent, Model, Replica, Revision, Workflow
from weft.webhooks.outbox import emit

READY_SAMPLES = 20  # the newest first deploys on a pool that estimate when the next one is ready
DELETED = "the endpoint was deleted"


@dataclass
class Deploying:
    """A deploy that has started: the endpoint (new, or the caller's of that name), its workflow, the
    engine its replicas will run, the cluster they go to (None: the plan picks a pool) and the version the
    deploy adds."""

    endpoint: Endpoint
    workflow: Workflow
    engine: str | None
    cluster_id: str | None
    version: str


@dataclass
class ReadyEstimate:
    at: datetime
    seconds: float
    basis: str


def start_deploy(session: Session, user_id: str, model: Model, *, name: str, engine: Engine | None = None,
                 cluster_id: str | None = None, instance_type: str | None = None,
                 config: dict[str, Any] | None = None, auto_scaling: dict[str, Any] | None = None,
                 template_id: str | None = None, traffic_percent: int | None = None,
                 field_prefix: str = "") -> Deploying:
    """Start `model`'s deploy_model workflow (document 004's local deploy: model, endpoint and config,
    cluster) and create the endpoint's row when the name is new, so it reads at once. What cannot be placed
    is Invalid naming the request field (`field_prefix` + weft's name of it). Commits."""
    try:
        cluster_id = placement.target_cluster(session, user_id, cluster_id, instance_type)
        engine_name = placement.deploy_engine(session, model, engine, cluster_id)
    except placement.PlacementError as exc:
        field = f"{field_prefix}{exc.field}"
        raise Invalid(str(exc), [{"field": field, "message": str(exc)}], {"field": field}) from exc
    config = dict(config or {})
    steps: dict[int, dict[str, Any]] = {
        1: {"model_id": model.id},
        3: {"endpoint_name": name, "template_id": template_id, "deploy_config": config, "engine": engine},
        5: {"cluster_id": cluster_id}}
    if auto_scaling:
        steps[3]["auto_scaling"] = auto_scaling
    if traffic_percent:
        steps[3]["traffic_percent"] = traffic_percent
    wf = workflows.create(session, user_id, WorkflowName.DEPLOY_MODEL, steps, trigger=True, total_steps=5)
    endpoint = revisions.endpoint_named(session, name)
    if endpoint is None:  # a new name (an existing one is the caller's: the steps refused anyone else's)
        endpoint = Endpoint(id=endpoint_id_of(wf.id), user_id=user_id, model_id=model.id, name=name,
                            slug=revisions.unique_slug(session, name), status=EndpointStatus.DEPLOYING,
                            workflow_id=wf.id, config=config, engine=engine_name)
        session.add(endpoint)
        session.flush()
    session.commit()
    # the flow adds the revision (it may already run); until it has, the answer names the next number
    return Deploying(endpoint=endpoint, workflow=wf, engine=engine_name, cluster_id=cluster_id,
                     version=revisions.version_of_workflow(session, endpoint.id, wf.id))


def adapter_model(session: Session, adapter: Adapter) -> Model:
    """The fine-tuned model (base + adapter) registered with `adapter`; Conflict while there is none."""
    model = session.get(Model, adapter.model_id) if adapter.model_id else None
    if model is None:
        raise Conflict(f"adapter {adapter.id} has no registered model to deploy: its fine-tune registers one "
                       "when it completes (GET /api/v1/adapters lists it with its model_id)",
                       {"field": "adapter_id", "adapter_id": adapter.id})
    return model


def replica_bounds(min_replicas: int, max_replicas: int, auto_scaling: bool) -> tuple[int, int]:
    """Document 003's replicas as endpoint bounds: with auto-scaling, [min, max] (0 scales to zero when
    idle); without, a fixed max(min_replicas, 1)."""
    if auto_scaling:
        return min_replicas, max_replicas
    fixed = max(min_replicas, 1)
    return fixed, fixed


def start_adapter_deploy(session: Session, user_id: str, adapter: Adapter, *, name: str | None,
                         instance_type: str | None, min_replicas: int, max_replicas: int,
                         auto_scaling: bool) -> Deploying:
    """Document 003's deploy of an adapter: its registered model through the same deploy_model workflow as
    a model deploy, with the replica bounds from `min/max_replicas` and `auto_scaling`. Commits."""
    model = adapter_model(session, adapter)
    low, high = replica_bounds(min_replicas, max_replicas, auto_scaling)
    config = {"max_replicas": high} if auto_scaling else {"replicas": high}
    return start_deploy(session, user_id, model, name=name or f"{slug_of(adapter.name)[:80]}-{adapter.id[:8]}",
                        instance_type=instance_type, config=config,
                        auto_scaling={"min_instances": low, "max_instances": high}, field_prefix="config.")


def first_deploy_seconds(session: Session, pool: str, limit: int = READY_SAMPLES) -> list[float]:
    """How long the newest first deploys on `pool` took to serve: each endpoint whose v1 ran there, from
    the endpoint's creation to its first traffic (the deploy routing it its requests)."""
    first_traffic = func.min(EndpointEvent.created_at)
    rows = session.exec(
        select(Endpoint.created_at, first_traffic)
        .join(Revision, col(Revision.endpoint_id) == col(Endpoint.id))
        .join(EndpointEvent, col(EndpointEvent.endpoint_id) == col(Endpoint.id))
        .where(Revision.number == 1, Revision.pool == pool, EndpointEvent.action == "traffic")
        .group_by(col(Endpoint.id), col(Endpoint.created_at))
        .order_by(col(Endpoint.created_at).desc()).limit(limit)).all()
    return [max(0.0, (as_utc(ready) - as_utc(created)).total_seconds()) for created, ready in rows if ready]


def ready_estimate(session: Session, cluster_id: str | None, now: datetime | None = None) -> ReadyEstimate:
    """When a deploy started now should serve: now + the median of `first_deploy_seconds` on the pool its
    replicas go to; with none measured yet, now + `replica_start_timeout_seconds` (the latest the deploy
    waits for its replicas before it fails)."""
    pool, _ = placement.replica_pool(session, cluster_id)
    durations = first_deploy_seconds(session, pool)
    if durations:
        seconds = float(statistics.median(durations))
        basis = (f"median of the {len(durations)} newest first deploys on pool {pool!r} (endpoint created → "
                 f"first traffic): {seconds:.0f} s")
    else:
        seconds = get_settings().replica_start_timeout_seconds
        basis = (f"no deploy on pool {pool!r} measured yet: the replica start timeout ({seconds:.0f} s), "
                 "the latest the deploy waits for its replicas")
    return ReadyEstimate(at=(now or utcnow()) + timedelta(seconds=seconds), seconds=seconds, basis=basis)


def stop_replica(session: Session, replica: Replica) -> None:
    """Take one replica out of rotation now and cancel its flow run (its server stops with it)."""
    if replica.flow_run_id and replica.state != ReplicaState.STOPPED:
        status = runs.run_statuses([replica.flow_run_id]).get(replica.flow_run_id, (WorkflowStatus.PENDING, None))[0]
        if status not in TERMINAL:
            runs.cancel(replica.flow_run_id)
    replica.state, replica.updated_at = ReplicaState.STOPPED, utcnow()
    session.add(replica)


def drain_replica(session: Session, replica: Replica, reason: str, grace: timedelta) -> None:
    """Take the replica out of rotation; the controller stops it once `grace` has passed (its requests in
    flight finish meanwhile)."""
    now = utcnow()
    replica.state, replica.stop_at, replica.reason, replica.updated_at = ReplicaState.DRAINING, now + grace, reason, now
    session.add(replica)


def deploys_in_flight(session: Session, endpoint: Endpoint) -> list[str]:
    """The deploy workflows still adding a revision to the endpoint: those of its deploying revisions, and
    the one that created it while it has no revision yet."""
    ids = [r.workflow_id for r in revisions.revisions(session, endpoint.id)
           if r.status == RevisionStatus.DEPLOYING and r.workflow_id]
    if endpoint.status == EndpointStatus.DEPLOYING and endpoint.workflow_id and endpoint.workflow_id not in ids:
        ids.append(endpoint.workflow_id)
    return ids


def stop(session: Session, endpoint: Endpoint) -> None:
    """Delete an endpoint: its deploys in flight are cancelled (one would bring it back), it leaves rotation
    at once (requests get 503), its healthy replicas drain for `replica_drain_seconds` (starting ones at
    once), then the controller stops them and marks it stopped (`deployment.deleted`). One with nothing
    running (a cloud proxy, replicas all gone) stops here. Emits `deployment.stopped` and
    `model.undeployed`; stopping a stopping or stopped endpoint changes nothing. Commits only when it
    cancels a deploy (the caller commits the rest)."""
    if endpoint.status in (EndpointStatus.STOPPING, EndpointStatus.STOPPED):
        return
    for workflow_id in deploys_in_flight(session, endpoint):
        try:
            workflows.cancel(session, endpoint.user_id, workflow_id)
        except (Conflict, NotFound):  # it ended meanwhile, or it is not a workflow of the owner's
            pass
    now = utcnow()
    drain = timedelta(seconds=get_settings().replica_drain_seconds)
    left = list(session.exec(select(Replica).where(Replica.endpoint_id == endpoint.id,
                                                   Replica.state != ReplicaState.STOPPED)))
    draining = 0
    for replica in left:  # unhealthy and draining ones the controller stops as they are
        if replica.state in revisions.LIVE:
            drain_replica(session, replica, DELETED, drain if replica.state == ReplicaState.HEALTHY else timedelta(0))
            draining += 1
    at_once = endpoint.kind == "proxy" or not left
    endpoint.status = EndpointStatus.STOPPED if at_once else EndpointStatus.STOPPING
    endpoint.updated_at = now
    session.add(endpoint)
    revisions.record(session, endpoint.id, endpoint.status,
                     f"{DELETED}: stopped" if at_once else
                     f"{DELETED}: {draining} replica(s) drain for {drain.total_seconds():g} s, then stop")
    data = revisions.event_data(endpoint)
    emit(session, "deployment.stopped", data, key=f"deployment:{endpoint.id}:stopped", user_id=endpoint.user_id)
    emit(session, "model.undeployed", data, key=f"model:{endpoint.model_id}:undeployed:{endpoint.id}",
         user_id=endpoint.user_id)
    if at_once:
        emit(session, "deployment.deleted", data, key=f"deployment:{endpoint.id}:deleted", user_id=endpoint.user_id)
