"""SQLite write transactions of one process queue on weft.db's lock: every write lands, and a failed
transaction gives the lock back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from weft.db import engine_for


def test_concurrent_writers_all_land_and_a_rollback_releases_the_lock(tmp_path):
    engine = engine_for(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))

    def write(i: int) -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT count(*) FROM t")).scalar_one()  # a read first, as the routes do
            conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": i})
            conn.execute(text("UPDATE t SET n = n + 1 WHERE id = last_insert_rowid()"))

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(write, range(200)))

    with pytest.raises(ZeroDivisionError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t (n) VALUES (-1)"))
        1 / 0  # noqa: B018  (fails mid-transaction: rolled back, the lock released)
    with ThreadPoolExecutor(1) as pool:  # another thread can write at once (a held lock would block it 30 s)
        pool.submit(write, 1000).result(timeout=5)

    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), min(n) FROM t")).one() == (201, 1)  # 0 + 1
