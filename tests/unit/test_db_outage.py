"""A lost database without a database server: which errors count as an outage, the API's 503 for them,
the rate limiter counting in memory meanwhile, request records kept until the database is back, and the
webhook loop that keeps going."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tests.helpers.api import assert_error
from weft.db import database_unavailable
from weft.net import free_port

DRIVER_TEXT = "connection to server at 10.9.8.7, port 5432 failed: Connection refused"


def lost() -> OperationalError:
    """What SQLAlchemy raises when PostgreSQL is down: the driver's message inside."""
    return OperationalError("SELECT 1", {}, psycopg.OperationalError(DRIVER_TEXT))


def test_outage_errors_are_told_from_bugs():
    invalidated = DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    assert database_unavailable(lost()) and database_unavailable(invalidated)
    assert database_unavailable(psycopg.OperationalError("raw driver error"))
    assert database_unavailable(PoolTimeout("QueuePool limit reached"))
    try:
        try:
            raise lost()
        except OperationalError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert database_unavailable(wrapped)
    assert not database_unavailable(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not database_unavailable(ValueError("no"))


@pytest.fixture
def app(db):
    from api.main import create_app

    app = create_app()

    def down_dependency() -> None:
        raise lost()

    @app.get("/t/down")
    def down() -> None:
        raise lost()

    @app.get("/t/invalidated")
    async def invalidated() -> None:
        raise DBAPIError("SELECT 1", {}, Exception("terminating connection"), connection_invalidated=True)

    @app.get("/t/driver")
    def driver() -> None:
        raise psycopg.OperationalError(DRIVER_TEXT)

    @app.get("/t/dependency", dependencies=[Depends(down_dependency)])
    def dependency() -> None:
        return None

    @app.get("/t/bug")
    def bug() -> None:
        raise IntegrityError("INSERT INTO user", {}, Exception("duplicate key value violates unique constraint"))

    return app


def test_a_lost_database_is_a_503_without_driver_text(app):
    client = TestClient(app)  # no lifespan: the session's migrated SQLite database serves the limiter
    for path in ("/t/down", "/t/invalidated", "/t/driver", "/t/dependency"):
        r = client.get(path)
        error = assert_error(r, 503, "SERVICE_UNAVAILABLE")
        assert error["message"] == "the database is unavailable; try again shortly"
        assert r.headers["retry-after"] == "1" and "x-ratelimit-limit" in r.headers
        for leak in ("10.9.8.7", "psycopg", "OperationalError", "SELECT", "terminating"):
            assert leak not in r.text
    r = client.get("/t/bug")  # a bad statement stays a bug: 500, and no SQL in the body either
    assert_error(r, 500, "SERVICE_ERROR")
    assert "INSERT" not in r.text and "duplicate" not in r.text


def test_rate_limit_counts_in_memory_while_the_database_is_down(app, monkeypatch):
    import api.ratelimit as ratelimit
    from weft.settings import get_settings

    client = TestClient(app)
    real = ratelimit.count_hit
    calls = []

    def failing(key: str, window: int) -> int:
        calls.append(key)
        raise lost()

    monkeypatch.setattr(ratelimit, "count_hit", failing)
    monkeypatch.setattr(ratelimit, "FALLBACK_SECONDS", 0.3)
    monkeypatch.setattr(get_settings(), "rate_limit_per_minute", 2)
    headers = {"X-API-Key": f"k-{time.time_ns()}"}  # its own bucket (the key need not be valid for `/`)
    responses = [client.get("/", headers=headers) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["1", "0", "0"]
    assert len(calls) == 1  # after a failure the database is left alone for FALLBACK_SECONDS
    time.sleep(0.35)
    monkeypatch.setattr(ratelimit, "count_hit", real)
    monkeypatch.setattr(get_settings(), "rate_limit_per_minute", 600)
    r = client.get("/", headers=headers)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "599"  # the database's count: 1st


def test_records_wait_for_the_database_and_are_stored_once(db, monkeypatch):
    from sqlmodel import Session, func, select

    import api.gateway as gateway
    from weft.db import engine_for, get_engine
    from weft.tables import InferenceRecord

    route = f"/t/{time.time_ns()}"
    working = get_engine()
    down = engine_for(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")  # nothing listens

    def stored() -> int:
        with Session(working) as s:
            return s.exec(select(func.count()).select_from(InferenceRecord)
                          .where(InferenceRecord.route == route)).one()

    async def scenario() -> None:
        recorder = gateway.Recorder(interval=0.01)
        monkeypatch.setattr(gateway, "get_engine", lambda: down)
        for i in range(3):
            recorder.add(gateway.inference_record("e1", None, "u1", route, 1.0, 200, None, f"p{i}"))
        assert await recorder.flush() is False and recorder.failing
        assert recorder.queue.qsize() == 3 and stored() == 0
        monkeypatch.setattr(gateway, "get_engine", lambda: working)
        await recorder.aclose()
        assert recorder.queue.empty() and not recorder.failing

    asyncio.run(scenario())
    assert stored() == 3
    down.dispose()


def test_webhook_loop_keeps_going_through_an_outage(monkeypatch):
    import weft.webhooks.service as service

    calls = []

    def reconcile(since, **kwargs) -> int:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise lost()
        return 0

    monkeypatch.setattr(service, "prefect_configured", lambda: True)
    monkeypatch.setattr(service, "reconcile", reconcile)
    monkeypatch.setattr(service, "deliver_due", lambda limit: 0)

    async def scenario() -> int:
        hooks = service.WebhookService(poll_seconds=0.005, subscribe=False)
        await hooks.start()
        deadline = time.monotonic() + 10
        while len(calls) < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        alive = not hooks._tasks[0].done()
        await hooks.stop()
        assert alive
        return hooks.rounds

    assert asyncio.run(scenario()) >= 5 and len(calls) >= 6
