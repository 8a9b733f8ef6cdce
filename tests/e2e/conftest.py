"""The real stack for end-to-end tests: a Prefect server, a `cpu` worker and the API as subprocesses
(what `make run` starts), one per test module, stopped when the module ends."""

from __future__ import annotations

import httpx
import pytest

from weft.net import free_port
from weft.settings import Settings


@pytest.fixture(scope="module")
def stack():
    from weft.platform import Platform

    platform = Platform(settings=Settings(api_port=free_port(), prefect_port=free_port()))
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
