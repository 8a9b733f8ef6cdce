"""Webhooks: signatures, retries with backoff, exactly-once workflow events across restarts, the API."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlmodel import select

from tests.helpers.receiver import Receiver

API = "/api/v1"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def api(client, prefect_server):
    """The in-process API (its lifespan runs weft's WebhookService too) on the test Prefect server."""
    return client


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("WEFT_WEBHOOK_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("WEFT_WEBHOOK_MAX_ATTEMPTS", "5")


def user_id_of(api, headers) -> str:
    r = api.get(f"{API}/auth/me", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def create_hook(api, headers, url: str, events: list[str], secret: str | None = "s3cret-signing-key") -> dict:
    body = {"url": url, "events": events}
    if secret is not None:
        body["secret"] = secret
    r = api.post(f"{API}/webhooks", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def deliveries(api, headers, hook_id: str) -> list[dict]:
    r = api.get(f"{API}/webhooks/{hook_id}/deliveries", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def drain(predicate, timeout: float = 15.0) -> None:
    """Run the delivery worker until `predicate()` holds."""
    from weft.webhooks.delivery import deliver_due

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for deliveries"
        deliver_due(50)
        time.sleep(0.02)


# --- signing ----------------------------------------------------------------------------------------

def test_verify_accepts_only_the_exact_signed_body_and_fresh_timestamp():
    from weft.webhooks.signing import sign, verify

    body = b'{"id":"evt_1","type":"workflow.completed"}'
    header = sign("topsecret", body)
    assert verify("topsecret", body, header)
    assert verify("topsecret", body.decode(), header)  # str bodies are signed as UTF-8
    assert not verify("wrong", body, header)
    assert not verify("topsecret", body.replace(b"completed", b"failed"), header)
    stale = sign("topsecret", body, timestamp=int(time.time()) - 301)
    assert not verify("topsecret", body, stale)
    assert verify("topsecret", body, stale, tolerance=600)
    assert not verify("topsecret", body, "v1=" + header.split("v1=")[1])  # no timestamp
    assert not verify("topsecret", body, "garbage")
    assert not verify("topsecret", body, None)
    # several v1 values (secret rotation): one match is enough
    assert verify("topsecret", body, f"{header},v1={'0' * 64}")


def test_signed_delivery_verifies_with_the_webhook_secret(api, auth_headers, receiver):
    from weft.db import session_scope
    from weft.webhooks.outbox import emit
    from weft.webhooks.signing import verify

    headers = auth_headers()
    hook = create_hook(api, headers, receiver.url, ["model.created"], secret="my-receiver-secret")
    with session_scope() as s:
        event = emit(s, "model.created", {"model_id": "m1", "name": "tiny"}, key=f"t:{hook['id']}:1",
                     user_id=user_id_of(api, headers))
    drain(lambda: receiver.requests)
    request = receiver.requests[0]
    body, h = request["body"], request["headers"]
    payload = json.loads(body)
    assert payload["id"] == event.id and payload["type"] == "model.created"
    assert payload["data"] == {"model_id": "m1", "name": "tiny"} and payload["created_at"].endswith("Z")
    assert h["X-Weft-Event"] == "model.created" and h["X-Weft-Delivery"] and h["Content-Type"] == "application/json"
    assert verify("my-receiver-secret", body, h["X-Weft-Signature"])
    assert not verify("another-secret", body, h["X-Weft-Signature"])
    assert not verify("my-receiver-secret", body.replace(b"tiny", b"huge"), h["X-Weft-Signature"])
    t = int(h["X-Weft-Signature"].split(",")[0].removeprefix("t="))
    assert not verify("my-receiver-secret", body, h["X-Weft-Signature"], now=t + 301)


# --- retries ----------------------------------------------------------------------------------------

def test_failing_receiver_gets_the_event_once_after_retries(api, auth_headers, receiver, fast_retries):
    from weft.db import session_scope
    from weft.webhooks.outbox import emit

    receiver.fail_first = 2
    headers = auth_headers()
    hook = create_hook(api, headers, receiver.url, ["drift.detected"])
    with session_scope() as s:
        emit(s, "drift.detected", {"alert_id": "a1"}, key=f"drift:{hook['id']}", user_id=user_id_of(api, headers))
        again = emit(s, "drift.detected", {"alert_id": "a1"}, key=f"drift:{hook['id']}", user_id=user_id_of(api, headers))
    assert again is None  # a replayed key emits nothing
    drain(lambda: deliveries(api, headers, hook["id"])[0]["status"] != "pending")
    from weft.webhooks.delivery import deliver_due

    assert deliver_due(50) == 0  # nothing left to send
    [delivery] = deliveries(api, headers, hook["id"])
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert delivery["attempts"][0]["error"].startswith("HTTP 500") and delivery["attempts"][2]["error"] is None
    assert all(a["duration_ms"] >= 0 and a["at"] for a in delivery["attempts"])
    assert len(receiver.requests) == 3
    assert [r["headers"]["X-Weft-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert len({r["headers"]["X-Weft-Delivery"] for r in receiver.requests}) == 1
    assert len({json.loads(r["body"])["id"] for r in receiver.requests}) == 1


def test_delivery_gives_up_after_max_attempts(api, auth_headers, receiver, monkeypatch):
    from weft.db import session_scope
    from weft.settings import webhook_settings
    from weft.webhooks.delivery import backoff
    from weft.webhooks.outbox import emit

    monkeypatch.setenv("WEFT_WEBHOOK_BACKOFF_SECONDS", "0.02")
    monkeypatch.setenv("WEFT_WEBHOOK_MAX_ATTEMPTS", "3")
    assert [backoff(n, webhook_settings()) for n in (1, 2, 3)] == [0.02, 0.04, 0.08]
    receiver.fail_first = 100
    headers = auth_headers()
    hook = create_hook(api, headers, receiver.url, ["prediction.error"])
    with session_scope() as s:
        emit(s, "prediction.error", {"error": "boom"}, key=f"pe:{hook['id']}", user_id=user_id_of(api, headers))
    drain(lambda: deliveries(api, headers, hook["id"])[0]["status"] != "pending")
    [delivery] = deliveries(api, headers, hook["id"])
    assert delivery["status"] == "failed" and len(delivery["attempts"]) == 3 and delivery["next_attempt_at"] is None
    assert len(receiver.requests) == 3


# --- workflow events across restarts ----------------------------------------------------------------

def _flow_run(state):
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="weft-webhook-probe")
    def probe() -> None:
        pass

    with get_client(sync_client=True) as c:
        return str(c.create_flow_run(probe, state=state).id)


def _set_state(flow_run_id: str, state) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        c.set_flow_run_state(UUID(flow_run_id), state, force=True)


def _workflow(user_id: str, flow_run_id: str) -> str:
    from weft.db import session_scope
    from weft.tables import Workflow

    with session_scope() as s:
        wf = Workflow(user_id=user_id, workflow_type="fine_tune", name="webhook probe", total_steps=1,
                      current_step=1, flow_run_id=flow_run_id, status="PENDING")
        s.add(wf)
        s.flush()
        return wf.id


def test_workflow_completion_is_delivered_once_across_restarts(api, auth_headers, receiver):
    from prefect.states import Completed, Pending, Running

    from weft.db import session_scope
    from weft.tables import Event, WebhookDelivery, Workflow
    from weft.webhooks.reconcile import reconcile
    from weft.webhooks.service import WebhookService

    headers = auth_headers()
    user_id = user_id_of(api, headers)
    hook = create_hook(api, headers, receiver.url, ["workflow.started", "workflow.completed", "workflow.failed"])
    flow_run_id = _flow_run(Pending())
    workflow_id = _workflow(user_id, flow_run_id)

    first = WebhookService(subscribe=False)
    asyncio.run(first.tick())  # pending: nothing to say yet
    assert receiver.requests == []

    _set_state(flow_run_id, Running())
    asyncio.run(first.tick())
    asyncio.run(first.tick())
    drain(lambda: receiver.of_type("workflow.started"))  # (the API's own service may be the one sending)

    # "restart" mid-run: a new service (lookback covers the past) sees the same run still running
    second = WebhookService(subscribe=False)
    asyncio.run(second.tick())
    _set_state(flow_run_id, Completed())
    # the API dies after emitting but before delivering: the event waits in the outbox
    reconcile(second.since)
    with session_scope() as s:
        [event] = s.exec(select(Event).where(Event.key == f"workflow:{workflow_id}:0:COMPLETED")).all()
        assert s.exec(select(WebhookDelivery).where(WebhookDelivery.event_id == event.id)).one()
    third = WebhookService(subscribe=False)
    for _ in range(3):
        asyncio.run(third.tick())
    drain(lambda: receiver.of_type("workflow.completed"))
    asyncio.run(WebhookService(subscribe=False).tick())
    assert reconcile(third.since) == 0
    drain(lambda: all(d["status"] != "pending" for d in deliveries(api, headers, hook["id"])))

    started, completed = receiver.of_type("workflow.started"), receiver.of_type("workflow.completed")
    assert len(started) == 1 and len(completed) == 1
    data = json.loads(completed[0]["body"])["data"]
    assert data["workflow_id"] == workflow_id and data["status"] == "completed"
    assert data["flow_run_id"] == flow_run_id and data["name"] == "webhook probe"
    by_type = {d["event_type"]: d for d in deliveries(api, headers, hook["id"])}
    assert set(by_type) == {"workflow.started", "workflow.completed"}
    assert all(d["status"] == "delivered" and len(d["attempts"]) == 1 for d in by_type.values())
    with session_scope() as s:
        keys = s.exec(select(Event.key).where(Event.key.like(f"workflow:{workflow_id}:%"))).all()
        assert sorted(keys) == sorted([f"workflow:{workflow_id}:created", f"workflow:{workflow_id}:0:RUNNING",
                                       f"workflow:{workflow_id}:0:COMPLETED"])
        assert s.get(Workflow, workflow_id).status == "COMPLETED"


def test_run_that_finishes_between_polls_still_reports_start_and_failure(api, auth_headers, receiver):
    from prefect.states import Failed, Pending, Running

    from weft.webhooks.service import WebhookService

    headers = auth_headers()
    user_id = user_id_of(api, headers)
    create_hook(api, headers, receiver.url, ["workflow.started", "workflow.failed"])
    flow_run_id = _flow_run(Pending())
    _workflow(user_id, flow_run_id)
    _set_state(flow_run_id, Running())
    _set_state(flow_run_id, Failed(message="out of memory"))
    asyncio.run(WebhookService(subscribe=False).tick())
    drain(lambda: len(receiver.requests) >= 2)
    asyncio.run(WebhookService(subscribe=False).tick())
    assert len(receiver.of_type("workflow.started")) == 1
    [failed] = receiver.of_type("workflow.failed")
    assert json.loads(failed["body"])["data"]["reason"] == "out of memory"
    assert len(receiver.requests) == 2


def test_prefect_event_subscription_delivers_without_the_poll(api, auth_headers, receiver):
    """With the poll slowed to an hour, the flow-run event subscription alone delivers completion."""
    from prefect.states import Completed, Pending, Running

    from weft.webhooks.service import WebhookService

    headers = auth_headers()
    user_id = user_id_of(api, headers)
    create_hook(api, headers, receiver.url, ["workflow.completed"])
    flow_run_id = _flow_run(Pending())
    _workflow(user_id, flow_run_id)

    async def scenario() -> None:
        service = WebhookService(poll_seconds=3600, subscribe=True)
        await service.start()
        try:
            deadline = time.monotonic() + 10
            while not service.subscribed:
                assert time.monotonic() < deadline, "the subscription did not connect"
                await asyncio.sleep(0.05)
            while not service.rounds:  # the first poll round (at start) is over: only the subscription is left
                assert time.monotonic() < deadline, "the first poll round did not finish"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(_set_state, flow_run_id, Running())
            await asyncio.to_thread(_set_state, flow_run_id, Completed())
            deadline = time.monotonic() + 10
            while not receiver.of_type("workflow.completed"):
                assert time.monotonic() < deadline, "no delivery through the subscription"
                await asyncio.sleep(0.05)
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert len(receiver.of_type("workflow.completed")) == 1


# --- the API ----------------------------------------------------------------------------------------

def test_api_validation_ownership_and_secret_handling(api, auth_headers, receiver):
    from prefect.blocks.system import Secret

    headers, other = auth_headers(), auth_headers()

    for bad_url in ("ftp://example.com/x", "not a url", "http://", "https://user:pw@example.com/"):
        r = api.post(f"{API}/webhooks", json={"url": bad_url, "events": ["workflow.completed"]}, headers=headers)
        assert r.status_code == 422, (bad_url, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = api.post(f"{API}/webhooks", json={"url": receiver.url, "events": ["workflow.completed", "model.exploded",
                                                                            "nope"]}, headers=headers)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["unknown"] == ["model.exploded", "nope"]
    assert "model.exploded" in r.json()["error"]["message"]
    r = api.post(f"{API}/webhooks", json={"url": receiver.url, "events": []}, headers=headers)
    assert r.status_code == 422
    assert api.post(f"{API}/webhooks", json={"url": receiver.url, "events": ["workflow.completed"]}).status_code == 401

    # a generated secret is shown once; a given one never
    created = create_hook(api, headers, receiver.url, ["workflow.completed", "workflow.completed"], secret=None)
    assert created["secret"].startswith("whsec_") and created["events"] == ["workflow.completed"]
    assert Secret.load(f"weft-webhook-{created['id']}").get() == created["secret"]
    given = create_hook(api, headers, receiver.url, ["deployment.ready"], secret="given-secret-123")
    assert "secret" not in given and set(given) >= {"id", "url", "events", "created_at", "updated_at"}
    got = api.get(f"{API}/webhooks/{created['id']}", headers=headers)
    assert got.status_code == 200 and "secret" not in got.json() and "secret_block" not in got.json()
    listed = api.get(f"{API}/webhooks?limit=1", headers=headers).json()
    assert listed["meta"] == {"total": 2, "limit": 1, "offset": 0} and "secret" not in listed["data"][0]
    assert "whsec_" not in api.get(f"{API}/webhooks", headers=headers).text

    # other users see nothing
    for method, path in (("get", ""), ("get", "/deliveries"), ("delete", ""), ("post", "/test"), ("patch", "")):
        kwargs = {"json": {"active": False}} if method == "patch" else {}
        r = getattr(api, method)(f"{API}/webhooks/{created['id']}{path}", headers=other, **kwargs)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "NOT_FOUND"
    assert api.get(f"{API}/webhooks", headers=other).json()["meta"]["total"] == 0

    # the test event goes to that webhook only, signed with its secret
    r = api.post(f"{API}/webhooks/{created['id']}/test", headers=headers)
    assert r.status_code == 202 and r.json()["event_type"] == "webhook.test" and r.json()["status"] == "pending"
    drain(lambda: receiver.requests)
    from weft.webhooks import verify

    assert [q["headers"]["X-Weft-Event"] for q in receiver.requests] == ["webhook.test"]
    assert verify(created["secret"], receiver.requests[0]["body"], receiver.requests[0]["headers"]["X-Weft-Signature"])
    assert deliveries(api, headers, given["id"]) == []

    # patch and delete (the Secret block goes too)
    r = api.patch(f"{API}/webhooks/{given['id']}", json={"events": ["bogus.event"]}, headers=headers)
    assert r.status_code == 422
    r = api.patch(f"{API}/webhooks/{given['id']}", json={"active": False}, headers=headers)
    assert r.status_code == 200 and r.json()["active"] is False
    assert api.delete(f"{API}/webhooks/{created['id']}", headers=headers).status_code == 204
    assert api.get(f"{API}/webhooks/{created['id']}", headers=headers).status_code == 404
    with pytest.raises(ValueError):
        Secret.load(f"weft-webhook-{created['id']}")
    types = api.get(f"{API}/webhooks/event-types", headers=headers).json()
    assert {"workflow.completed", "deployment.failed", "prediction.error"} <= {t["type"] for t in types}
