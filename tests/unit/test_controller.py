"""The endpoint controller's decisions for one endpoint (`Controller.reconcile`), on the real tables: a dead
replica is replaced, a revision whose deploy ended without traffic fails and drains, a revision without
traffic drains after the drain period, and a retried deploy revives its failed revision."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlmodel import select

from weft.clock import utcnow
from weft.db import session_scope
from weft.serving import revisions
from weft.serving.controller import Controller, Pass
from weft.settings import get_settings
from weft.tables import Endpoint, EndpointEvent, Event, Model, Replica, Revision, User


def endpoint_with(db, *revs: dict) -> tuple[str, list[str]]:
    """An active endpoint with revisions (field overrides each) and one healthy replica per revision."""
    tag = uuid.uuid4().hex[:8]
    with session_scope() as s:
        user = User(email=f"{tag}@example.com", username=f"u{tag}", password_hash="-")
        model = Model(user_id=user.id, name=f"model {tag}", provider_type="disk", storage_uri="file:///nowhere")
        endpoint = Endpoint(user_id=user.id, model_id=model.id, name=f"ep-{tag}", status="active",
                            min_instances=1, max_instances=1)
        for row in (user, model, endpoint):  # in foreign-key order
            s.add(row)
            s.flush()
        ids = []
        for number, fields in enumerate(revs, start=1):
            rev = Revision(endpoint_id=endpoint.id, number=number, model_id=model.id, replicas=1, **fields)
            s.add(rev)
            s.add(Replica(endpoint_id=endpoint.id, revision_id=rev.id, state="healthy", url=f"http://r{number}",
                          flow_run_id=f"run-{rev.id}", last_seen=utcnow()))
            ids.append(rev.id)
        return endpoint.id, ids


def reconcile(endpoint_id: str, statuses=None, probes=None, deploy_runs=None) -> Pass:
    done = Pass()
    with session_scope() as s:
        Controller("test").reconcile(s, s.get(Endpoint, endpoint_id), statuses or {}, probes or {},
                                     utcnow(), done, deploy_runs)
    return done


def replicas_of(revision_id: str) -> list[Replica]:
    with session_scope() as s:
        return list(s.exec(select(Replica).where(Replica.revision_id == revision_id)))


def test_a_replica_whose_server_is_gone_is_replaced(db):
    endpoint_id, [v1] = endpoint_with(db, {"traffic": 100, "status": "active"})
    [old] = replicas_of(v1)
    done = reconcile(endpoint_id, probes={old.id: False})
    states = {r.id: r.state for r in replicas_of(v1)}
    assert states.pop(old.id) == "stopped" and list(states.values()) == ["starting"]
    assert [start.replica_id for start in done.starts] == list(states) and done.cancels == [old.flow_run_id]
    with session_scope() as s:
        actions = [e.action for e in s.exec(select(EndpointEvent).where(EndpointEvent.endpoint_id == endpoint_id))]
    assert actions == ["replica_failed", "replica_started"]


def test_a_revision_whose_deploy_ended_without_traffic_fails_and_drains(db):
    endpoint_id, [v1, v2] = endpoint_with(db, {"traffic": 100, "status": "active"}, {"status": "deploying"})
    reconcile(endpoint_id, deploy_runs={v2: ("FAILED", "activate_endpoint failed")})
    with session_scope() as s:
        rev = s.get(Revision, v2)
        assert (rev.status, rev.replicas) == ("failed", 0)
        assert s.exec(select(Event).where(Event.key == f"deployment:{endpoint_id}:failed:{v2}")).first()
    assert [r.state for r in replicas_of(v2)] == ["draining"] and [r.state for r in replicas_of(v1)] == ["healthy"]

    with session_scope() as s:  # the deploy workflow is retried: its revision deploys again
        rev = s.get(Revision, v2)
        rev.workflow_id = "wf-retried"
        s.add(rev)
    with session_scope() as s:
        endpoint = s.get(Endpoint, endpoint_id)
        again = revisions.add_revision(s, endpoint, endpoint.model_id, "wf-retried")
        assert again.id == v2 and again.status == "deploying" and again.failures == 0


def test_a_running_deploy_keeps_its_revision_deploying(db):
    endpoint_id, [v1, v2] = endpoint_with(db, {"traffic": 100, "status": "active"}, {"status": "deploying"})
    reconcile(endpoint_id, deploy_runs={v2: ("RUNNING", None)})
    with session_scope() as s:
        assert s.get(Revision, v2).status == "deploying"
    assert [r.state for r in replicas_of(v2)] == ["healthy"]


def test_a_revision_without_traffic_drains_after_the_drain_period(db):
    drain = get_settings().revision_drain_seconds
    endpoint_id, [v1, v2] = endpoint_with(db, {"traffic": 100, "status": "active"},
                                          {"traffic": 0, "status": "inactive", "traffic_changed_at": utcnow()})
    reconcile(endpoint_id)
    assert [r.state for r in replicas_of(v2)] == ["healthy"]  # within the drain period
    with session_scope() as s:
        rev = s.get(Revision, v2)
        rev.traffic_changed_at = utcnow() - timedelta(seconds=drain + 1)
        s.add(rev)
    reconcile(endpoint_id)
    assert [r.state for r in replicas_of(v2)] == ["draining"] and [r.state for r in replicas_of(v1)] == ["healthy"]
