"""`AsyncClient`'s versions of the methods that make several requests: paging, waiting, following logs,
uploading and downloading. The one-request methods are the blocking client's own (they return the
transport's awaitable)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from weft.client import resources as sync
from weft.client.progress import bar
from weft.schemas.datasets import DatasetOut
from weft.schemas.deployments import DeploymentOut
from weft.schemas.endpoints import DeployOut
from weft.schemas.evaluations import EvaluationOut
from weft.schemas.jobs import JobOut, LogEvent
from weft.schemas.models import ModelSummary
from weft.schemas.webhooks import WebhookOut


async def pages(transport: Any, path: str, items: str, model: Any, params: dict[str, Any] | None = None,
                page_size: int = sync.PAGE_SIZE) -> AsyncIterator[Any]:
    offset: int | None = 0
    while offset is not None:
        body = await transport.request("GET", path, params={**(params or {}), "limit": page_size, "offset": offset})
        batch, offset = sync.next_page(body, items, offset, page_size)
        for item in batch:
            yield model.model_validate(item)


async def until(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float | None, poll: float,
                what: str, on_progress: Callable[[Any], None] | None = None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = await read()
        if on_progress:
            on_progress(found)
        if done(found):
            return found
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} is still {found.status} after {timeout} s")
        await asyncio.sleep(poll)


class Workflows(sync.Workflows):
    async def create(self, name: str, workflow_type: str, config: dict[str, Any],  # type: ignore[override]
                     description: str | None = None) -> Any:
        if (path := sync.local_file(config)) is not None:
            datasets = Datasets(self._t)
            config = sync.with_dataset_id(config, (await datasets.wait((await datasets.upload(path)).id)).id)
        return await super().create(name, workflow_type, config, description)

    def list(self, workflow_type: str | None = None, status: str | None = None) -> AsyncIterator[sync.WorkflowSummary]:  # type: ignore[override]
        return pages(self._t, "/workflows", "data", sync.WorkflowSummary,
                     sync.clean(workflow_type=workflow_type, status=status))

    async def run(self, workflow_type: str, *steps: dict[str, Any], wait: bool = True,  # type: ignore[override]
                  timeout: float | None = None, on_progress: Callable[[sync.Workflow], None] | None = None) -> sync.Workflow:
        if not steps:
            raise ValueError("run needs at least one step")
        wf = None
        for number, data in enumerate(steps, 1):
            wf = await self.step(workflow_type, number, data, workflow_id=wf.id if wf else None,
                                 total_steps=None if wf else len(steps), trigger=number == len(steps))
        assert wf is not None
        return await self.wait(wf.id, timeout=timeout, on_progress=on_progress) if wait else wf

    async def wait(self, workflow_id: str, timeout: float | None = None, poll: float = 2.0,  # type: ignore[override]
                   on_progress: Callable[[sync.Workflow], None] | None = None) -> sync.Workflow:
        return await until(lambda: self.get(workflow_id), sync.finished, timeout, poll, f"workflow {workflow_id}",
                           on_progress)


class Models(sync.Models):
    async def deploy(self, model_id: str, *, wait: bool = True, timeout: float = 900,  # type: ignore[override]
                     **config: Any) -> DeployOut:
        out = await self._t.request("POST", f"/models/{model_id}/deploy", DeployOut, json=config)
        if not wait:
            return out
        return sync.deployed(out, await Workflows(self._t).wait(out.workflow_id, timeout=timeout))

    def list(self, **filters: Any) -> AsyncIterator[ModelSummary]:  # type: ignore[override]
        return pages(self._t, "/models", "data", ModelSummary, sync.clean(**filters))

    async def download(self, model_id: str, path: str | Path, progress: bool = False) -> Path:  # type: ignore[override]
        response = await self._t.send("GET", f"/models/{model_id}/download", stream=True)
        try:
            target = sync.download_target(Path(path), str(path).endswith("/"), response, model_id)
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            partial = target.with_name(target.name + ".part")
            with bar(f"model {model_id}", total, progress) as advance, partial.open("wb") as out:
                async for chunk in response.aiter_bytes(1 << 20):
                    out.write(chunk)
                    advance(len(chunk))
            partial.replace(target)
            return target
        finally:
            await response.aclose()


class Datasets(sync.Datasets):
    async def upload(self, path: str | Path, name: str | None = None,  # type: ignore[override]
                     description: str | None = None, progress: bool = False) -> DatasetOut:
        path = Path(path)
        return await self._t.request("POST", "/datasets/upload", DatasetOut,
                                     files={"file": (path.name, path.read_bytes())},
                                     data=sync.clean(name=name or path.stem, description=description))

    def list(self) -> AsyncIterator[DatasetOut]:  # type: ignore[override]
        return pages(self._t, "/datasets", "data", DatasetOut)

    async def wait(self, dataset_id: str, timeout: float = 300, poll: float = 0.5) -> DatasetOut:  # type: ignore[override]
        return await until(lambda: self.get(dataset_id), sync.validated, timeout, poll, f"dataset {dataset_id}")


class Jobs(sync.Jobs):
    def list(self, status: str | None = None) -> AsyncIterator[JobOut]:  # type: ignore[override]
        return pages(self._t, "/jobs", "jobs", JobOut, sync.clean(status=status))

    def logs(self, job_id: str, lines: int | None = None, follow: bool = False) -> Any:
        if not follow:
            return super().logs(job_id, lines)
        return self.follow(job_id)

    async def follow(self, job_id: str, after: int = 0, max_reconnects: int = 20) -> AsyncIterator[LogEvent]:  # type: ignore[override]
        stream = sync.LogStream(job_id, after, max_reconnects)
        while True:
            try:
                response = await self._t.send("GET", f"/jobs/{job_id}/logs", stream=True, headers=stream.headers(),
                                              timeout=httpx.Timeout(self._t.timeout, read=None))
                try:
                    async for batch in _events(response):
                        for event in batch:
                            if (line := stream.take(*event)) is not None:
                                yield line
                            elif stream.ended:
                                return
                finally:
                    await response.aclose()
            except (httpx.TransportError, httpx.StreamError):
                pass
            await asyncio.sleep(stream.dropped())


async def _events(response: httpx.Response) -> AsyncIterator[list[tuple[str, str | None, str]]]:
    """The stream's events, one list per blank-line-terminated event as it arrives."""
    pending: list[str] = []
    async for line in response.aiter_lines():
        pending.append(line)
        if not line:
            yield list(sync.sse_events(iter(pending)))
            pending = []


class Evaluations(sync.Evaluations):
    async def wait(self, evaluation_id: str, timeout: float | None = None, poll: float = 2.0) -> EvaluationOut:  # type: ignore[override]
        return await until(lambda: self.get(evaluation_id), sync.finished, timeout, poll,
                           f"evaluation {evaluation_id}")


class Deployments(sync.Deployments):
    def list(self, status: str | None = None) -> AsyncIterator[DeploymentOut]:  # type: ignore[override]
        return pages(self._t, "/deployments", "items", DeploymentOut, sync.clean(status=status))

    async def versions(self, deployment_id: str) -> Any:  # type: ignore[override]
        from weft.schemas.deployments import VersionList

        return (await self._t.request("GET", f"/deployments/{deployment_id}/versions", VersionList)).versions

    async def wait(self, deployment_id: str, timeout: float = 600, poll: float = 2.0) -> DeploymentOut:  # type: ignore[override]
        return await until(lambda: self.get(deployment_id), sync.served, timeout, poll, f"deployment {deployment_id}")


class Webhooks(sync.Webhooks):
    def list(self) -> AsyncIterator[WebhookOut]:  # type: ignore[override]
        return pages(self._t, "/webhooks", "data", WebhookOut)
