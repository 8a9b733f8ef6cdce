"""The real stack for end-to-end tests: a Prefect server, a `cpu` worker and the API as subprocesses
(what `make run` starts), one per test module, stopped when the module ends; and the same platform in
its production profile (PostgreSQL, S3, two workers, two API processes)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from weft.net import free_port, free_port_run
from weft.settings import Settings


@pytest.fixture(scope="module")
def stack(request):
    """The embedded platform; a module's `STACK_SETTINGS` dict overrides settings (shorter drain periods)."""
    from weft.platform import Platform

    overrides = getattr(request.module, "STACK_SETTINGS", {})
    platform = Platform(settings=Settings(api_port=free_port(), prefect_port=free_port(), **overrides))
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


@pytest.fixture(scope="module")
def api(stack):
    client = httpx.Client(base_url=stack.api_url, timeout=30)
    yield client
    client.close()


@dataclass
class ProductionStack:
    """`weft up --profile production` on throwaway services: what tests (fault tests included) drive.

    `platform` names its children `prefect-server`, `worker-cpu-1`, `worker-cpu-2`, `api-1`, `api-2`
    (`platform.kill(name, sig)`, `platform.restart(name)`, `platform.pid(name)`, `platform.pids(name)`);
    `postgres` and `s3` are the session's servers (`stop()` / `start()` them to simulate an outage).
    """

    platform: Any  # weft.platform.Platform
    settings: Settings
    postgres: Any  # weft.testing.services.PostgresServer
    s3: Any  # weft.testing.services.SeaweedS3
    bucket: str
    weft_database: str
    prefect_database: str
    apis: list[httpx.Client] = field(default_factory=list)

    @property
    def api_urls(self) -> list[str]:
        return self.platform.api_urls

    @property
    def prefect_api(self) -> str:
        return self.settings.prefect_api

    def fs(self):
        """An s3fs filesystem on the stack's S3 server (paths are `bucket/key`)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.s3.storage_options)

    def query(self, database: str, sql: str, **params: Any) -> list[tuple]:
        """Rows of one SQL statement on one of the stack's databases (`weft_database`, `prefect_database`)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.postgres.port, user="postgres", dbname=database,
                             connect_timeout=10) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def production_stack(postgres, s3, tmp_path_factory) -> Iterator[ProductionStack]:
    """The production profile: weft's and Prefect's tables in two fresh PostgreSQL databases, storage in a
    fresh S3 bucket, 2 cpu workers and 2 API processes (module-scoped; stopped when the module ends)."""
    from weft.platform import Platform

    tag = uuid.uuid4().hex[:8]
    weft_db, prefect_db, bucket = f"weft_{tag}", f"prefect_{tag}", f"weft-production-{tag}"
    postgres.create_database(weft_db)
    postgres.create_database(prefect_db)
    s3.make_bucket(bucket)
    home: Path = tmp_path_factory.mktemp("production-home")
    settings = Settings(
        home=home, api_port=free_port_run(2), prefect_port=free_port(), workers=2, api_processes=2,
        database_url=postgres.url(weft_db), prefect_database_url=postgres.url(prefect_db, driver="asyncpg"),
        storage_url=f"s3://{bucket}/weft", storage_options=s3.storage_options,
        crash_after_seconds=60,  # a killed worker's run is Crashed ~1 min after its last heartbeat (every 30 s)
    )
    platform = Platform(settings=settings, profile="production")
    stack = ProductionStack(platform=platform, settings=settings, postgres=postgres, s3=s3, bucket=bucket,
                            weft_database=weft_db, prefect_database=prefect_db)
    try:
        platform.start()
        print(f"production stack up: { {k: round(v, 1) for k, v in platform.timings.items()} }")
        stack.apis = [httpx.Client(base_url=url, timeout=30) for url in platform.api_urls]
        yield stack
    finally:
        for client in stack.apis:
            client.close()
        platform.stop()
