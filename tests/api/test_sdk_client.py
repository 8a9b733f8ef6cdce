"""The Python client (`weft.client`) against the API in-process: typed results, errors as `weft.errors`
exceptions with the request id, paging, retries that honour Retry-After, webhook signatures, and an
import that loads neither torch nor Prefect."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest

import weft
from weft.client import resources as res
from weft.errors import Invalid, InvalidInput, NotFound, RateLimited, Unauthorized
from weft.schemas.datasets import DatasetOut


@pytest.fixture
def sdk(client, auth_headers):
    token = auth_headers()["Authorization"].removeprefix("Bearer ")
    with weft.Client(api_key=token, base_url="http://testserver", http_client=client) as c:
        yield c


def test_importing_the_client_loads_neither_torch_nor_prefect():
    code = ("import sys, weft.client, weft; weft.Client(api_key='k', base_url='http://x'); "
            "print(sorted(m for m in ('torch', 'prefect', 'sqlalchemy', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_errors_carry_code_message_details_and_request_id(sdk, client):
    with pytest.raises(NotFound) as missing:
        sdk.jobs.get("no-such-job")
    exc = missing.value
    assert exc.code == "NOT_FOUND" and exc.status == 404 and "no-such-job" in exc.message
    assert exc.request_id and len(exc.request_id) >= 8

    with pytest.raises(InvalidInput) as bad:
        sdk.jobs.create({"base_model": "nothing-registered", "dataset_id": "x"})
    assert bad.value.code == "INVALID_CONFIG" and bad.value.status == 400

    with pytest.raises(Invalid) as invalid:  # 422: the field list is in details
        sdk.workflows.step("add_local_model", 1, {"modality": "sound"}, total_steps=6)
    assert invalid.value.code == "VALIDATION_ERROR"
    assert any(e["field"].endswith("modality") for e in invalid.value.details["errors"])

    with pytest.raises(Unauthorized):
        weft.Client(api_key="wft_wrong", base_url="http://testserver", http_client=client).jobs.list().__next__()


def test_workflow_steps_then_get_list_and_pages(sdk, fake_trigger):
    for _ in range(3):
        wf = sdk.workflows.step("add_local_model", 1, {"modality": "llm"}, total_steps=6)
        assert wf.status == "pending" and wf.current_step == 1 and wf.id == wf.workflow_id
    got = sdk.workflows.get(wf.id)
    assert got.workflow_type == "add_local_model" and got.config == got.data and got.output is None
    listed = list(res.pages(sdk._t, "/workflows", "data", res.WorkflowSummary, page_size=2))
    assert len(listed) == 3 and len({w.id for w in listed}) == 3 and all(w.status == "pending" for w in listed)
    assert [w.id for w in sdk.workflows.list()] == [w.id for w in listed]


def test_datasets_upload_and_read_back_typed(sdk, tmp_path):
    path = tmp_path / "codes.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    ds = sdk.datasets.upload(path, name="codes", progress=False)
    assert isinstance(ds, DatasetOut) and ds.name == "codes" and ds.size_bytes == path.stat().st_size
    deadline = time.monotonic() + 20
    while (ds := sdk.datasets.get(ds.id)).status == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert ds.status == "ready" and ds.record_count == 2
    assert ds.id in {d.id for d in sdk.datasets.list()}


def test_webhook_signatures_verify():
    from weft.webhooks.signing import sign

    body = b'{"type": "job.completed"}'
    header = sign("s" * 16, body)
    assert weft.Client(api_key="k", base_url="http://x").webhooks.verify(header, body, "s" * 16)
    assert not res.Webhooks.verify(header, body + b" ", "s" * 16)
    assert not res.Webhooks.verify(sign("s" * 16, body, timestamp=int(time.time()) - 3600), body, "s" * 16)


class Flaky:
    """A server that answers `failures` times with `status` (and Retry-After), then 200."""

    def __init__(self, status: int, failures: int, retry_after: str | None) -> None:
        self.status, self.failures, self.retry_after, self.calls = status, failures, retry_after, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(self.status, headers={**headers, "X-Request-ID": "r1"}, json={
                "error": {"code": "RATE_LIMITED", "message": "slow down", "details": {}}, "request_id": "r1"})
        return httpx.Response(200, json={"platforms": []})


def test_429_and_503_are_retried_after_retry_after():
    flaky = Flaky(429, 2, "1")
    c = weft.Client(api_key="k", base_url="http://x", http_client=httpx.Client(transport=httpx.MockTransport(flaky)))
    assert c.platforms.list().platforms == []
    assert len(flaky.calls) == 3 and flaky.calls[1] - flaky.calls[0] >= 0.95 and flaky.calls[2] - flaky.calls[1] >= 0.95

    flaky = Flaky(503, 1, None)  # no Retry-After: exponential backoff
    c = weft.Client(api_key="k", base_url="http://x", http_client=httpx.Client(transport=httpx.MockTransport(flaky)))
    assert c.platforms.list().platforms == [] and len(flaky.calls) == 2

    flaky = Flaky(429, 5, "0")  # more failures than retries: the error, with its request id
    c = weft.Client(api_key="k", base_url="http://x", max_retries=2,
                    http_client=httpx.Client(transport=httpx.MockTransport(flaky)))
    with pytest.raises(RateLimited) as limited:
        c.platforms.list()
    assert len(flaky.calls) == 3 and limited.value.request_id == "r1" and limited.value.status == 429


def test_async_client_reads_the_same_resources(client, auth_headers, fake_trigger):
    token = auth_headers()["Authorization"].removeprefix("Bearer ")
    sync = weft.Client(api_key=token, base_url="http://testserver", http_client=client)
    made = sync.workflows.step("add_local_model", 1, {"modality": "llm"}, total_steps=6)

    async def read():
        # the in-process app served over httpx's ASGI transport (the TestClient is blocking)
        transport = httpx.ASGITransport(app=client.app)
        async with weft.AsyncClient(api_key=token, base_url="http://testserver",
                                    http_client=httpx.AsyncClient(transport=transport)) as c:
            got = await c.workflows.get(made.id)
            listed = [w.id async for w in c.workflows.list()]
            with pytest.raises(NotFound):
                await c.jobs.get("missing")
            return got, listed

    got, listed = asyncio.run(read())
    assert got.id == made.id and got.status == "pending" and listed == [made.id]


def test_every_resource_reaches_its_route(sdk, tmp_path):
    """Each read and write of the resources on a fresh user: the paths and bodies are the API's."""
    assert list(sdk.models.list()) == [] and list(sdk.jobs.list()) == [] and list(sdk.deployments.list()) == []
    assert sdk.me().username
    assert sdk.endpoints.list().data == [] and sdk.evaluations.list().data == []
    assert {p.name for p in sdk.platforms.list().platforms} >= {"local"}
    assert all(r.provider == "local" for r in sdk.platforms.resources(provider="local").resources)
    assert sdk.monitoring.metrics() is not None and list(sdk.monitoring.drift_alerts()) == []
    hook = sdk.webhooks.create("http://127.0.0.1:9/hook", ["workflow.completed"])
    assert hook.secret and sdk.webhooks.get(hook.id).url == "http://127.0.0.1:9/hook"
    assert [w.id for w in sdk.webhooks.list()] == [hook.id]
    sdk.webhooks.delete(hook.id)
    for call in (lambda: sdk.models.get("missing"), lambda: sdk.models.export("missing"),
                 lambda: sdk.models.deploy("missing", wait=False), lambda: sdk.models.delete("missing"),
                 lambda: sdk.evaluations.create("missing", test_set_path="/x.jsonl"),
                 lambda: sdk.evaluations.get("missing"), lambda: sdk.endpoints.get("missing"),
                 lambda: sdk.deployments.get("missing"), lambda: sdk.deployments.versions("missing"),
                 lambda: sdk.deployments.rollback("missing", "v1"), lambda: sdk.deployments.scale("missing", 0, 2),
                 lambda: sdk.deployments.metrics("missing"), lambda: sdk.deployments.predict("missing", [1.0]),
                 lambda: sdk.datasets.get("missing"), lambda: sdk.datasets.analyze("missing"),
                 lambda: sdk.inference.predict("missing", "hi"),
                 lambda: sdk.inference.batch_predict("missing", [{"id": "a", "prompt": "hi"}]),
                 lambda: sdk.jobs.cancel("missing"), lambda: sdk.jobs.logs("missing"),
                 lambda: sdk.workflows.get("missing")):
        with pytest.raises(NotFound):  # 404, not a 405 or a 422: the route and its body are right
            call()
