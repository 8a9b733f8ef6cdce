"""Database engine, sessions and migrations (Alembic) over the SQLModel tables.

On PostgreSQL several API processes share one database: migrations take an advisory lock, so processes
starting together migrate once, and `database_unavailable` tells a lost database (down, restarting,
unreachable, pool exhausted) from a bug, so callers answer 503 or retry instead of failing hard.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, create_engine

from weft.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# an API process serves 40 threads (anyio's default): SQLAlchemy's 5 + 10 connections made requests
# queue for a connection at 20 concurrent clients
POOL = {"pool_size": 10, "max_overflow": 20}
CONNECT_TIMEOUT_SECONDS = 5  # an unreachable host fails a request in seconds, not after TCP's minutes
MIGRATION_LOCK = 0x77656674  # the advisory lock ("weft") that serialises migrations across processes


SQLITE_BUSY_SECONDS = 30
SQLITE_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "WITH")


class _SerializedWriteCursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.connection.before_statement(sql)  # type: ignore[attr-defined]
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        self.connection.before_statement(sql)  # type: ignore[attr-defined]
        return super().executemany(sql, parameters)


class SerializedWriteConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions queue on one lock per database file in this process.

    SQLite lets one writer in at a time and makes the others poll (its busy handler sleeps up to 100 ms
    between tries, unfairly): with 20 API threads writing, profiling showed the step post's p99 at 15x
    its median, almost all of it in that polling. Here a thread takes the lock before the first write
    of a transaction and gives it back at commit or rollback, so waiting writers are woken in turn
    the moment it is free. Reads never wait (WAL); other processes still meet SQLite's own lock.
    `engine_for` makes a subclass per database file, with its own `write_lock`."""

    write_lock: threading.Lock

    def cursor(self, factory: Any = None) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor(factory or _SerializedWriteCursor)

    def before_statement(self, sql: str) -> None:
        if not getattr(self, "_writing", False) and sql.lstrip()[:7].upper().startswith(SQLITE_WRITES):
            # after the busy timeout, go on and let SQLite decide (a same-thread nested write, say)
            self._writing = self.write_lock.acquire(timeout=SQLITE_BUSY_SECONDS)

    def _end_write(self) -> None:
        if getattr(self, "_writing", False):
            self._writing = False
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._end_write()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end_write()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._end_write()


@lru_cache
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)

        class Connection(SerializedWriteConnection):
            write_lock = threading.Lock()

        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS,
                                               "factory": Connection}, **POOL)

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL lets the API read while a flow writes
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return eng
    connect_args = {}
    if make_url(url).get_driver_name() in ("psycopg", "psycopg2"):  # libpq options
        # the columns are `timestamp without time zone` holding UTC: aware times convert in the session's zone
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "options": "-c timezone=UTC"}
    # pre-ping: a pooled connection that died with a database restart is replaced, not handed out
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **POOL)


def get_engine() -> Engine:
    return engine_for(get_settings().db_url)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) means the database cannot be reached or is busy, rather than a
    bad statement: worth a 503 and a retry. Covers SQLAlchemy's wrapped errors and the driver's own."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, OperationalError | InterfaceError | PoolTimeout):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if _driver_unavailable(current):
            return True
        current, seen = current.__cause__, seen + 1  # `raise ... from`, not any error met while handling
    return False


def _driver_unavailable(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # the embedded profile needs no PostgreSQL driver
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config  # imported here: every flow imports this module, few migrate

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().db_url).replace("%", "%%"))
    return cfg


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, hold a session advisory lock: API processes that start together migrate one after
    another (the later ones find the schema at head) instead of racing to create the same tables."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})


def migrate(url: str | None = None) -> None:
    """Bring the database to the latest schema and seed the provider catalog."""
    from alembic import command  # imported here: every flow imports this module, few migrate

    engine = engine_for(url or get_settings().db_url)  # creates the SQLite parent folder
    with _migration_lock(engine):
        command.upgrade(alembic_config(url), "head")
        from weft.catalog import seed_catalog

        seed_catalog()
