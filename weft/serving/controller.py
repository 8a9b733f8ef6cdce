"""The endpoint controller: every few seconds, desired against actual for every replica endpoint.

Desired is stored (weft/serving/revisions.py: revisions, traffic, bounds; the autoscaler's count per
revision); actual is the replicas' rows, their flow runs' states in Prefect and a health probe of each
serving replica. A pass replaces dead replicas (run ended, server gone, heartbeat stopped, never came
up), starts missing ones, drains surplus ones and those of revisions without traffic, and records each
action with its reason in the endpoint's event log. Only the holder of the lease acts, so a second copy
(another `weft up`, a restarted controller) stays passive until the first is gone. A replica whose
server still answers is adopted as it is: a controller restart starts nothing twice.

Database writes happen in one short transaction per endpoint; Prefect calls (starting and cancelling
replica runs) happen after it commits."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from weft import pools, runs
from weft.clock import as_utc, utcnow
from weft.db import session_scope
from weft.monitoring import retrain
from weft.serving import autoscale, hosting
from weft.serving.revisions import LIVE, converged, event_data, record, revisions
from weft.settings import Settings, get_settings
from weft.specs.names import WorkflowName
from weft.statuses import RUNS_REPLICAS, TERMINAL, EndpointStatus, ReplicaState, RevisionStatus
from weft.tables import ControllerLease, Endpoint, Replica, Revision, Workflow
from weft.webhooks.outbox import emit

log = logging.getLogger("weft.controller")
LEASE = WorkflowName.ENDPOINT_CONTROLLER.value
DEPLOYMENT = f"{WorkflowName.ENDPOINT_CONTROLLER}/default"
MAX_START_FAILURES = 3  # a new revision whose replicas fail this often in a row is `failed`
WATCHED = (EndpointStatus.DEPLOYING, EndpointStatus.ACTIVE, EndpointStatus.UPDATING, EndpointStatus.STOPPING)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Start:
    replica_id: str
    endpoint_id: str
    pool: str


@dataclass
class Pass:
    """What one reconciliation pass decided: the runs to start and to cancel, and the events to log."""

    starts: list[Start] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


class Controller:
    def __init__(self, holder: str, settings: Settings | None = None) -> None:
        self.holder, self.settings = holder, settings or get_settings()
        self.host, self.pid = socket.gethostname(), os.getpid()

    # -- the lease ---------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take or renew the lease: it is free, ours, lapsed, or held by a dead process on this host."""
        now = utcnow()
        values = {"holder": self.holder, "host": self.host, "pid": self.pid,
                  "expires_at": now + timedelta(seconds=self.settings.controller_lease_seconds)}
        try:
            with session_scope() as s:
                lease = s.get(ControllerLease, LEASE)
                if lease is None:
                    s.add(ControllerLease(name=LEASE, **values))
                    return True
                if not (lease.holder == self.holder or as_utc(lease.expires_at) < now
                        or (lease.host == self.host and not _pid_alive(lease.pid))):
                    return False
                taken = s.exec(update(ControllerLease).where(col(ControllerLease.name) == LEASE,
                                                             col(ControllerLease.holder) == lease.holder)
                               .values(**values))
                return taken.rowcount == 1
        except IntegrityError:  # another copy inserted it first
            return False

    def release(self) -> None:
        with session_scope() as s:
            lease = s.get(ControllerLease, LEASE)
            if lease is not None and lease.holder == self.holder:
                s.delete(lease)

    # -- one pass ------------------------------------------------------------------------------------

    def run_once(self) -> list[str]:
        """Reconcile every endpoint once; returns the events recorded (also in each endpoint's log)."""
        with session_scope() as s:
            endpoint_ids = list(s.exec(select(Endpoint.id).where(col(Endpoint.kind).in_(RUNS_REPLICAS),
                                                                 col(Endpoint.status).in_(WATCHED))))
            replicas = list(s.exec(select(Replica).where(col(Replica.endpoint_id).in_(endpoint_ids),
                                                         Replica.state != ReplicaState.STOPPED)))
            deploys = dict(s.exec(select(Revision.id, Workflow.flow_run_id)
                                  .join(Workflow, Workflow.id == Revision.workflow_id)
                                  .where(col(Revision.endpoint_id).in_(endpoint_ids),
                                         Revision.status == RevisionStatus.DEPLOYING)).all())
        try:
            statuses = runs.run_statuses([r.flow_run_id for r in replicas if r.flow_run_id]
                                         + [run for run in deploys.values() if run])
        except Exception as exc:  # Prefect unreachable: judge by heartbeats and probes alone this pass
            log.warning("could not read replica run states: %s", exc)
            statuses = {}
        probes = {r.id: probe(r.url) for r in replicas if r.state == ReplicaState.HEALTHY and r.url}
        done = Pass()
        deploy_runs = {rev: statuses.get(run or "") for rev, run in deploys.items()}
        for endpoint_id in endpoint_ids:
            with session_scope() as s:
                self.reconcile(s, s.get(Endpoint, endpoint_id), statuses, probes, utcnow(), done, deploy_runs)
        try:  # one read of the runs to cancel, not one per run
            ending = runs.run_statuses(done.cancels) if done.cancels else {}
        except Exception as exc:  # the replicas stop by themselves once they see their rows stopped
            log.warning("could not read the replica runs to cancel %s: %s", done.cancels, exc)
            ending = None
        for flow_run_id in done.cancels if ending is not None else []:
            if ending.get(flow_run_id, ("", None))[0] in TERMINAL:
                continue
            try:
                runs.cancel(flow_run_id)
            except Exception as exc:
                log.warning("could not cancel replica run %s: %s", flow_run_id, exc)
        for start in done.starts:
            self.start(start, done)
        done.events += retrain.sweep()  # retrain chains and their canaries, every WEFT_RETRAIN_CHECK_SECONDS
        return done.events

    def start(self, start: Start, done: Pass) -> None:
        try:
            flow_run_id = runs.start_run(f"{WorkflowName.SERVE_REPLICA}/{start.pool}",
                                         {"endpoint_id": start.endpoint_id, "replica_id": start.replica_id},
                                         key=f"weft:replica:{start.replica_id}", tags=["replica"])
        except Exception as exc:
            with session_scope() as s:
                replica = s.get(Replica, start.replica_id)
                replica.state, replica.reason = ReplicaState.STOPPED, f"could not start its flow run: {exc}"[:2000]
                s.add(replica)
                done.events.append(self._note(s, start.endpoint_id, "start_failed", replica.reason, None,
                                              start.replica_id))
            return
        with session_scope() as s:
            replica = s.get(Replica, start.replica_id)
            replica.flow_run_id = replica.flow_run_id or flow_run_id
            s.add(replica)

    def _note(self, s: Session, endpoint_id: str, action: str, reason: str, version: str | None,
              replica_id: str | None = None) -> str:
        record(s, endpoint_id, action, reason, version, replica_id)
        return f"{endpoint_id}{f' {version}' if version else ''}: {action}: {reason}"

    def reconcile(self, s: Session, endpoint: Endpoint, statuses: dict[str, tuple[str, str | None]],
                  probes: dict[str, bool | None], now: datetime, done: Pass,
                  deploy_runs: dict[str, tuple[str, str | None] | None] | None = None) -> None:
        """One endpoint: replace the dead, drain what has finished draining, scale each revision to what
        it wants, and settle the endpoint's status. `deploy_runs` holds the state of each deploying
        revision's deploy workflow run: a revision whose deploy ended without routing it traffic failed."""
        cfg = self.settings
        revs = {r.id: r for r in revisions(s, endpoint.id)}
        replicas = list(s.exec(select(Replica).where(Replica.endpoint_id == endpoint.id,
                                                     Replica.state != ReplicaState.STOPPED)
                               .order_by(col(Replica.created_at))))
        replaced: dict[str, list[str]] = {}

        def note(action: str, reason: str, rev: Revision | None = None, replica: Replica | None = None) -> None:
            done.events.append(self._note(s, endpoint.id, action, reason, rev.version if rev else None,
                                          replica.id if replica else None))

        def stop(replica: Replica, reason: str) -> None:
            replica.state, replica.reason, replica.updated_at = ReplicaState.STOPPED, reason[:2000], now
            s.add(replica)
            hosting.forget(s, replica.id)
            if replica.flow_run_id:
                done.cancels.append(replica.flow_run_id)

        for replica in replicas:
            rev = revs.get(replica.revision_id or "")
            dead = self.dead_reason(replica, statuses.get(replica.flow_run_id or ""), probes.get(replica.id), now)
            if dead:
                stop(replica, dead)
                note("replica_failed", f"{replica.id}: {dead}", rev, replica)
                replaced.setdefault(replica.revision_id or "", []).append(replica.id)
                if rev is not None and replica.last_seen is None:  # it never served: back off
                    rev.failures += 1
                    rev.next_start_at = now + timedelta(seconds=min(60, 2 ** rev.failures))
            elif replica.state == ReplicaState.DRAINING and replica.stop_at and as_utc(replica.stop_at) <= now:
                stop(replica, replica.reason or "drained")
                note("replica_stopped", f"{replica.id}: {replica.reason or 'drained'}", rev, replica)
            elif replica.state == ReplicaState.HEALTHY and rev is not None and rev.failures:
                rev.failures, rev.next_start_at = 0, None

        for rev in revs.values():
            live = [r for r in replicas if r.revision_id == rev.id and r.state in LIVE]
            deploy = (deploy_runs or {}).get(rev.id)
            failed = (f"{rev.failures} replicas in a row failed before serving" if rev.failures >= MAX_START_FAILURES
                      else f"its deploy workflow ended {deploy[0]} before routing it traffic"
                      if deploy and deploy[0] in TERMINAL and not rev.traffic else None)
            if rev.status == RevisionStatus.DEPLOYING and failed:
                rev.status, rev.replicas = RevisionStatus.FAILED, 0
                note("revision_failed", failed, rev)
                emit(s, "deployment.failed", event_data(endpoint, version=rev.version, reason=failed),
                     key=f"deployment:{endpoint.id}:failed:{rev.id}", user_id=endpoint.user_id)
            batch = min((r.max_concurrency for r in live if r.state == ReplicaState.HEALTHY), default=None)
            hosts = hosting.hosts(s, rev.id)
            if hosts:  # a replica of its base serves this adapter revision: it needs no base of its own
                if rev.replicas:
                    note("hosted", f"served by replica {hosts[0].id} of endpoint {hosts[0].endpoint_id}: "
                                   f"{rev.replicas} → 0 replicas of its own", rev)
                    rev.replicas, rev.scaled_at = 0, now
                wanted, cold = 0, False
            else:
                wanted, cold = self.desired(s, endpoint, rev, now, note, batch)
            missing = wanted - len(live)
            if missing > 0 and (rev.next_start_at is None or as_utc(rev.next_start_at) <= now):
                why = (f"replacing {', '.join(replaced[rev.id])}" if replaced.get(rev.id)
                       else "a request is waiting (cold start)" if cold
                       else f"{len(live)} of {wanted} replicas run")
                for _ in range(missing):
                    replica = Replica(endpoint_id=endpoint.id, revision_id=rev.id, cold_start=cold,
                                      max_concurrency=int((rev.plan or {}).get("per_replica_concurrency", 1)))
                    s.add(replica)
                    done.starts.append(Start(replica.id, endpoint.id, rev.pool or pools.CPU))
                    note("replica_started", f"{replica.id}: {why}", rev, replica)
            elif missing < 0:  # surplus: those still starting first, then the newest
                surplus = sorted(live, key=lambda r: (r.state == ReplicaState.HEALTHY, -r.created_at.timestamp()))
                for replica in surplus[:-missing]:
                    grace = cfg.replica_drain_seconds if replica.state == ReplicaState.HEALTHY else 0
                    replica.state, replica.stop_at = ReplicaState.DRAINING, now + timedelta(seconds=grace)
                    replica.reason = (f"surplus: {wanted} wanted" if wanted
                                      else f"replica {hosts[0].id} of its base serves it" if hosts
                                      else "scaled to zero" if rev.traffic else "its revision has no traffic")
                    s.add(replica)
                    note("replica_draining", f"{replica.id}: {replica.reason}", rev, replica)
            if rev.traffic and rev.status != RevisionStatus.ACTIVE and (hosts or any(
                    r.state == ReplicaState.HEALTHY for r in live)):
                rev.status = RevisionStatus.ACTIVE
            s.add(rev)
        s.flush()
        self.settle(s, endpoint, note)

    def dead_reason(self, replica: Replica, run: tuple[str, str | None] | None, answers: bool | None,
                    now: datetime) -> str | None:
        """Why a replica counts as dead, or None while it lives (or drains)."""
        cfg = self.settings
        if replica.state == ReplicaState.UNHEALTHY:
            return replica.reason or "unhealthy"
        if run is not None and run[0] in TERMINAL:
            return f"its flow run ended {run[0]}" + (f": {run[1]}" if run[1] else "")
        if replica.state == ReplicaState.HEALTHY:
            if answers is False:
                return f"its server at {replica.url} refuses connections"
            quiet = (now - as_utc(replica.last_seen or replica.updated_at)).total_seconds()
            if quiet > max(cfg.replica_stale_seconds, 3 * cfg.replica_heartbeat_seconds):
                return f"no heartbeat for {quiet:.0f} s"
        if replica.state == ReplicaState.STARTING:
            age = (now - as_utc(replica.created_at)).total_seconds()
            if age > cfg.replica_start_timeout_seconds:
                return f"not healthy {age:.0f} s after it was started"
        return None

    def desired(self, s: Session, endpoint: Endpoint, rev: Revision, now: datetime, note,
                batch: int | None = None) -> tuple[int, bool]:
        """Replicas the revision wants now, and whether a start would be a cold start. `batch` is the batch
        limit its replicas report: a target concurrency above it would only queue requests."""
        cfg = self.settings
        if endpoint.status == EndpointStatus.STOPPING or rev.status == RevisionStatus.FAILED:
            return 0, False
        if rev.traffic == 0:
            if rev.status == RevisionStatus.DEPLOYING:
                return rev.replicas, False
            idle = (now - as_utc(rev.traffic_changed_at)).total_seconds()
            if idle < cfg.revision_drain_seconds:
                return rev.replicas, False
            if rev.replicas:
                note("revision_drained", f"no traffic for {idle:.0f} s: its replicas stop", rev)
                rev.replicas, rev.scaled_at = 0, now
            return 0, False
        demand = rev.demand_at is not None and as_utc(rev.demand_at) > as_utc(rev.scaled_at)
        waiting = rev.demand_at is not None and (now - as_utc(rev.demand_at)).total_seconds() < cfg.autoscale_panic_seconds
        decision = autoscale.decide(
            rev.replicas, endpoint.min_instances, endpoint.max_instances,
            min(endpoint.target_concurrency, batch) if batch else endpoint.target_concurrency,
            autoscale.load(s, rev.id, cfg.autoscale_panic_seconds, now),
            autoscale.load(s, rev.id, cfg.autoscale_stable_seconds, now),
            (now - as_utc(rev.scaled_at)).total_seconds(), cfg.autoscale_stable_seconds, cfg.autoscale_panic_seconds,
            demand, waiting)
        if decision.reason:
            note("scaled", f"{rev.replicas} → {decision.replicas} replicas: {decision.reason}", rev)
            rev.replicas, rev.scaled_at = decision.replicas, now
        return rev.replicas, decision.cold_start

    def settle(self, s: Session, endpoint: Endpoint, note) -> None:
        """A draining endpoint with nothing left is stopped; an updating one that converged is active."""
        if endpoint.status == EndpointStatus.STOPPING:
            left = s.exec(select(Replica).where(Replica.endpoint_id == endpoint.id,
                                                Replica.state != ReplicaState.STOPPED)).first()
            if left is None:
                endpoint.status, endpoint.updated_at = EndpointStatus.STOPPED, utcnow()
                note("stopped", "every replica drained and stopped")
                emit(s, "deployment.deleted", event_data(endpoint),
                     key=f"deployment:{endpoint.id}:deleted", user_id=endpoint.user_id)
        elif endpoint.status == EndpointStatus.UPDATING and converged(s, endpoint):
            endpoint.status, endpoint.updated_at = EndpointStatus.ACTIVE, utcnow()
            note("converged", "every revision runs the replicas it wants")
        s.add(endpoint)


def start() -> str:
    """A new run of the endpoint controller deployment (picked up by a `cpu-light` worker); while another
    copy holds the lease it waits passively."""
    return runs.start_run(DEPLOYMENT, {}, key=f"weft:controller:{uuid.uuid4()}", tags=["controller"])


def ensure_running() -> str | None:
    """Start a controller run when Prefect has none scheduled, pending or running (the last one crashed
    with its worker or was cancelled); returns the new run's id, None when one is there."""
    if runs.active_runs(DEPLOYMENT):
        return None
    return start()


def probe(url: str) -> bool | None:
    """True when the server answers /health, False when it refuses the connection (it is gone), None
    when it is slow or answers an error (a busy server is left to its heartbeat)."""
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200 or None
    except httpx.ConnectError:
        return False
    except httpx.HTTPError:
        return None
