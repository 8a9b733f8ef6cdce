"""Several API processes on one PostgreSQL: a rate limit shared by real `uvicorn api.main:app` processes,
503s through a PostgreSQL outage and recovery without a restart, delivery leases and outbox emission
that hold across concurrent workers, and a delivery whose worker was SIGKILLed mid-send."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.helpers.api import assert_error
from weft.net import free_port

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "multiprocess-test-secret-0123456789abcdef"
DRIVER_WORDS = ("psycopg", "sqlalchemy", "operationalerror", "traceback", "connection refused", "5432")


class Api:
    """`uvicorn api.main:app` in a subprocess (its own WEFT_HOME and Prefect home) on a free port."""

    def __init__(self, home: Path, db_url: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "api.log"
        home.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("WEFT_", "PREFECT_"))}
        self.env = {**base, "WEFT_HOME": str(home), "WEFT_DATABASE_URL": db_url, "WEFT_JWT_SECRET": JWT_SECRET,
                    "PREFECT_HOME": str(home / "prefect"), "WEFT_WEBHOOK_SUBSCRIBE": "false",
                    # a Prefect API where nothing listens: the webhook loop runs (no workflows to ask about)
                    "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api", "DO_NOT_TRACK": "1", **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Api:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                                          "--port", str(self.port)], cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, f"the API exited:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the API did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def register(api: Api) -> dict[str, str]:
    name = f"u{uuid.uuid4().hex[:10]}"
    r = httpx.post(api.url + "/api/v1/auth/register", timeout=30,
                   json={"email": f"{name}@example.com", "username": name, "password": "long-enough-pw"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def fresh_window(margin: float = 5.0) -> None:
    """Wait for the next rate-limit minute when less than `margin` seconds of this one are left."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


@pytest.fixture(scope="module")
def pg_db(postgres) -> Iterator[str]:
    """A fresh database for this module, migrated, and made weft's database in this process."""
    from weft.db import engine_for, migrate
    from weft.settings import get_settings

    name = f"weft_mp_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    url = postgres.url(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEFT_DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            migrate(url)
            yield url
        finally:
            engine_for(url).dispose()
    get_settings.cache_clear()


# --- (a) one rate limit across processes --------------------------------------------------------------

def test_two_api_processes_share_one_rate_limit(postgres, tmp_path):
    """Two processes, started together on a fresh database (they migrate one after the other), hit
    alternately and then concurrently by one user: N accepted per window in all, the rest 429."""
    from sqlalchemy import create_engine, text

    limit = 5
    name = f"weft_rl_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    apis = [Api(tmp_path / f"api{i}", postgres.url(name), WEFT_RATE_LIMIT_PER_MINUTE=str(limit)) for i in (0, 1)]
    try:
        for api in apis:
            api.start()
        for api in apis:
            api.wait()
        headers = register(apis[0])
        fresh_window()
        responses = [httpx.get(apis[i % 2].url + "/api/v1/auth/me", headers=headers, timeout=30)
                     for i in range(3 * limit)]
        by_window = defaultdict(list)
        for r in responses:
            by_window[r.headers["x-ratelimit-reset"]].append(r)
        for group in by_window.values():
            assert [r.status_code for r in group] == [200] * min(limit, len(group)) + [429] * (len(group) - limit)
            assert [int(r.headers["x-ratelimit-remaining"]) for r in group] == \
                [max(0, limit - n) for n in range(1, len(group) + 1)]
            for r in group[limit:]:
                assert_error(r, 429, "RATE_LIMITED")
        assert len(by_window) == 1  # fresh_window leaves enough of the minute for these quick requests

        other = register(apis[1])  # concurrently: the upsert is atomic, so still exactly N
        fresh_window()
        with ThreadPoolExecutor(8) as pool:
            burst = list(pool.map(lambda i: httpx.get(apis[i % 2].url + "/api/v1/auth/me", headers=other,
                                                      timeout=30), range(24)))
        windows = {r.headers["x-ratelimit-reset"] for r in burst}
        assert len(windows) == 1
        assert sum(r.status_code == 200 for r in burst) == limit
        assert sum(r.status_code == 429 for r in burst) == 24 - limit
        assert sorted(int(r.headers["x-ratelimit-remaining"]) for r in burst if r.status_code == 200) == \
            list(range(limit))

        engine = create_engine(postgres.url(name))
        with engine.connect() as conn:  # the count is the database's, not either process's
            hits = conn.execute(text("SELECT hits FROM rate_limit_window WHERE window_number = :w AND identity "
                                     "LIKE 'user:%' ORDER BY hits"), {"w": int(windows.pop()) // 60 - 1}).scalars()
            assert 24 in list(hits)
        engine.dispose()
        assert all(api.proc.poll() is None for api in apis)
    finally:
        for api in apis:
            api.stop()


# --- (b) a PostgreSQL outage ------------------------------------------------------------------------

def assert_unavailable(r: httpx.Response) -> None:
    assert_error(r, 503, "SERVICE_UNAVAILABLE")
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "retry-after"} <= set(r.headers)
    lowered = r.text.lower()
    assert not [w for w in DRIVER_WORDS if w in lowered], r.text


def test_outage_gives_503s_and_the_api_recovers_by_itself(tmp_path):
    """PostgreSQL stopped under a running API: every request that needs it is a clean 503; started
    again (same port and data): requests succeed at once, stale pooled connections replaced."""
    from weft.testing.services import PostgresServer

    with PostgresServer() as pg:  # our own: this test stops it
        pg.create_database("weft")
        api = Api(tmp_path / "api", pg.url("weft"), WEFT_WEBHOOK_POLL_SECONDS="0.5")
        try:
            api.start().wait()
            headers = register(api)
            me = api.url + "/api/v1/auth/me"
            with httpx.Client(timeout=30) as http, ThreadPoolExecutor(6) as pool:
                def burst(n: int = 12) -> list[httpx.Response]:
                    return list(pool.map(lambda _: http.get(me, headers=headers), range(n)))

                assert {r.status_code for r in burst()} == {200}  # several pooled connections now

                pg.stop()
                outage = [http.get(me, headers=headers) for _ in range(3)] + burst()
                outage.append(http.post(api.url + "/api/v1/auth/register", json={
                    "email": "x@example.com", "username": "xoutage", "password": "long-enough-pw"}))
                for r in outage:
                    assert_unavailable(r)
                assert http.get(api.url + "/").status_code == 200  # what needs no database still works

                pg.start()
                first = http.get(me, headers=headers)
                assert first.status_code == 200, first.text
                assert {r.status_code for r in burst()} == {200}

                pg.stop()  # a quick restart with no request in between: every pooled connection is stale
                pg.start()
                assert {r.status_code for r in burst()} == {200}
                time.sleep(1.5)  # the webhook loop meets the restarted database too
            assert api.proc.poll() is None
            log = api.log.read_text()
            assert "database unavailable" in log.lower()
        finally:
            api.stop()


# --- (c) delivery leases and emission across workers --------------------------------------------------

class Receiver:
    """Records every POST; the first one hangs until `release` is set (a worker dies while it waits)."""

    def __init__(self, hang_first: bool = False) -> None:
        self.requests: list[tuple[float, dict[str, str]]] = []
        self.release = threading.Event()
        if not hang_first:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((time.monotonic(), dict(self.headers)))
                if len(receiver.requests) == 1:
                    receiver.release.wait(60)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _user_and_hook(url: str = "http://127.0.0.1:9/none") -> tuple[str, str]:
    from weft.db import session_scope
    from weft.tables import User, Webhook

    with session_scope() as s:
        name = f"u{uuid.uuid4().hex[:10]}"
        user = User(email=f"{name}@example.com", username=name, password_hash="-")
        s.add(user)
        s.flush()
        hook = Webhook(user_id=user.id, url=url, events=["drift.detected"], secret_block="webhook-test-secret")
        s.add(hook)
        s.flush()
        return user.id, hook.id


def _pending(n: int) -> set[str]:
    """`n` due deliveries of one fresh webhook (only `_claim` reads them)."""
    from weft.clock import utcnow
    from weft.db import session_scope
    from weft.tables import WebhookDelivery

    _, hook_id = _user_and_hook()
    now = utcnow()
    rows = [WebhookDelivery(webhook_id=hook_id, event_id=f"e{i}-{uuid.uuid4().hex[:6]}", event_type="drift.detected",
                            next_attempt_at=now - timedelta(seconds=1)) for i in range(n)]
    with session_scope() as s:
        s.add_all(rows)
    return {r.id for r in rows}


def test_concurrent_claimers_never_share_a_delivery(pg_db):
    from weft.settings import WebhookSettings
    from weft.webhooks.delivery import _claim

    ids = _pending(150)
    settings = WebhookSettings(lease_seconds=300)
    start = threading.Barrier(3)

    def claimer(_: int) -> list[str]:
        start.wait()
        got: list[str] = []
        while batch := _claim(7, settings):  # until nothing is due (other tests' deliveries included)
            got += [d for d, _, _ in batch if d in ids]
        return got

    with ThreadPoolExecutor(3) as pool:
        claims = list(pool.map(claimer, range(3)))
    together = [d for c in claims for d in c]
    assert len(together) == len(set(together)) == len(ids) and set(together) == ids
    assert all(claims)  # each took a share


def test_a_lease_moves_once_under_a_race(pg_db):
    """The conditional update alone (what SQLite relies on): of racing holders of one token, one wins."""
    from weft.clock import utcnow
    from weft.db import session_scope
    from weft.tables import WebhookDelivery
    from weft.webhooks.delivery import _move_lease

    def race(delivery_id: str) -> int:
        with session_scope() as s:
            held = s.get(WebhookDelivery, delivery_id).next_attempt_at
        start = threading.Barrier(4)

        def take(i: int) -> bool:
            start.wait()
            with session_scope() as s:
                return _move_lease(s, delivery_id, held, next_attempt_at=utcnow() + timedelta(seconds=i + 60))

        with ThreadPoolExecutor(4) as pool:
            return sum(pool.map(take, range(4)))

    assert [race(d) for d in _pending(10)] == [1] * 10


def test_an_event_is_emitted_once_by_concurrent_processes(pg_db):
    from sqlmodel import func, select

    from weft.db import session_scope
    from weft.tables import Event, WebhookDelivery
    from weft.webhooks.outbox import emit

    user_id, hook_id = _user_and_hook()
    key = f"drift:{uuid.uuid4().hex}"
    start = threading.Barrier(4)

    def emitter(_: int) -> bool:
        start.wait()
        with session_scope() as s:
            event = emit(s, "drift.detected", {"alert_id": "a1"}, key=key, user_id=user_id)
            time.sleep(0.2)  # hold the transaction: the others wait on the key, then find it taken
            return event is not None

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(emitter, range(4))) == 1
    with session_scope() as s:
        assert s.exec(select(func.count()).select_from(Event).where(Event.key == key)).one() == 1
        assert s.exec(select(func.count()).select_from(WebhookDelivery)
                      .where(WebhookDelivery.webhook_id == hook_id)).one() == 1


def test_concurrent_reconciles_emit_each_transition_once(pg_db, monkeypatch):
    """Every API process reconciles: three at once over the same finished runs emit each event once."""
    from sqlmodel import col, select

    from weft.clock import utcnow
    from weft.db import session_scope
    from weft.statuses import WorkflowStatus
    from weft.tables import Event, Workflow
    from weft.webhooks import reconcile as rec

    user_id, _ = _user_and_hook()
    runs = {str(uuid.uuid4()): (WorkflowStatus.COMPLETED, None, True) for _ in range(6)}
    monkeypatch.setattr(rec, "_flow_runs", lambda ids: {i: runs[i] for i in ids if i in runs})
    with session_scope() as s:
        flows = [Workflow(user_id=user_id, workflow_type="fine_tune", name="probe", total_steps=1, current_step=1,
                          flow_run_id=run_id, status=WorkflowStatus.PENDING) for run_id in runs]
        s.add_all(flows)
    since = utcnow() - timedelta(minutes=1)
    start = threading.Barrier(3)

    def reconciler(_: int) -> int:
        start.wait()
        return rec.reconcile(since, flow_run_ids=list(runs))

    with ThreadPoolExecutor(3) as pool:
        emitted = list(pool.map(reconciler, range(3)))
    assert sum(emitted) == 3 * len(runs)  # created, started, completed: once each, whichever process
    with session_scope() as s:
        keys = s.exec(select(Event.key).where(col(Event.key).startswith("workflow:"),
                                              col(Event.user_id) == user_id)).all()
    assert len(keys) == len(set(keys)) == 3 * len(runs)


def test_a_delivery_held_by_a_killed_worker_is_sent_once_after_its_lease(pg_db, tmp_path, monkeypatch):
    """A worker process is SIGKILLed while its POST is in flight: the delivery stays leased, then, once
    the lease has passed, exactly one of two competing workers sends it (and records it)."""
    from sqlmodel import select

    import weft.webhooks.delivery as delivery
    from weft.clock import utcnow
    from weft.db import session_scope
    from weft.tables import WebhookDelivery
    from weft.webhooks.outbox import emit

    lease_seconds = 3.0
    receiver = Receiver(hang_first=True)
    worker: subprocess.Popen | None = None
    try:
        user_id, hook_id = _user_and_hook(receiver.url)
        with session_scope() as s:
            emit(s, "drift.detected", {"alert_id": "killed"}, key=f"drift:{uuid.uuid4().hex}", user_id=user_id)
        with session_scope() as s:
            [delivery_id] = s.exec(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == hook_id)).all()
        env = {**os.environ, "WEFT_DATABASE_URL": pg_db, "WEFT_HOME": str(tmp_path / "worker"),
               "WEFT_WEBHOOK_LEASE_SECONDS": str(lease_seconds), "WEFT_WEBHOOK_TIMEOUT_SECONDS": "60"}
        script = ("import weft.webhooks.delivery as d\n"
                  "d.read_secret = lambda name: 'whsec-test'\n"
                  "d.deliver_due(10)\n")
        worker = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, start_new_session=True)
        deadline = time.monotonic() + 90
        while not receiver.requests:
            assert time.monotonic() < deadline and worker.poll() is None, "the worker never sent"
            time.sleep(0.05)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        first_at = receiver.requests[0][0]
        with session_scope() as s:
            row = s.get(WebhookDelivery, delivery_id)
            assert row.status == "pending" and row.attempts == []
            assert row.next_attempt_at.replace(tzinfo=None) > utcnow().replace(tzinfo=None)  # still leased

        monkeypatch.setattr(delivery, "read_secret", lambda name: "whsec-test")
        monkeypatch.setenv("WEFT_WEBHOOK_LEASE_SECONDS", str(lease_seconds))
        stop = time.monotonic() + lease_seconds + 10

        def competing_worker(_: int) -> None:
            while time.monotonic() < stop:
                delivery.deliver_due(10)
                with session_scope() as s:
                    if s.get(WebhookDelivery, delivery_id).status != "pending":
                        return
                time.sleep(0.02)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(competing_worker, range(2)))
        for _ in range(3):  # nothing more goes out
            delivery.deliver_due(10)
        assert len(receiver.requests) == 2
        (_, killed), (second_at, sent) = receiver.requests
        assert second_at - first_at >= lease_seconds - 0.5  # not before the lease had passed
        assert killed["X-Weft-Delivery"] == sent["X-Weft-Delivery"] == delivery_id
        assert sent["X-Weft-Attempt"] == "1"  # the killed attempt left no record
        with session_scope() as s:
            row = s.get(WebhookDelivery, delivery_id)
            assert row.status == "delivered" and len(row.attempts) == 1 and row.attempts[0]["status_code"] == 200
    finally:
        if worker and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        receiver.close()
