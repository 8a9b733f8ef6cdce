"""The client's resources, one class per REST resource. A method that makes one request returns
`self._t.request(...)`: the value with the blocking client, an awaitable with `AsyncClient`, so both
clients share these classes. Methods that make several requests (paging, following logs, waiting,
downloading) are written for each; the async ones live in `weft.client.aio`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
from pydantic import AfterValidator

from weft.client.progress import CountingReader, bar
from weft.errors import Failed
from weft.schemas.classic import ClassicDeployCreated, PredictionResult
from weft.schemas.datasets import AnalysisOut, AnalysisStarted, DatasetOut
from weft.schemas.deployments import DeploymentDeleted, DeploymentOut, DeploymentUpdated, VersionList
from weft.schemas.drift import DriftAlertOut
from weft.schemas.endpoints import DeployOut, EndpointList, EndpointOut, VersionOut
from weft.schemas.evaluations import EvaluationCreated, EvaluationList, EvaluationOut
from weft.schemas.inference import BatchOut, PredictionOut
from weft.schemas.jobs import JobCancelled, JobCreated, JobLogs, JobOut, LogEvent
from weft.schemas.models import ExportStarted, ModelDeleted, ModelDetail, ModelRecord, ModelSummary
from weft.schemas.monitoring import DeploymentMetrics, MetricsOverview
from weft.schemas.platforms import PlatformConnected, PlatformDisconnected, PlatformList, ResourceList
from weft.schemas.webhooks import DeliveryOut, WebhookCreated, WebhookOut
from weft.schemas.workflow_create import WorkflowCreated, WorkflowStarted
from weft.schemas.workflows import STEP_ROUTES, WorkflowOut, WorkflowSummaryOut
from weft.statuses import RUN_TERMINAL

PAGE_SIZE = 100
READY = frozenset({"active", "running"})
DOWN = frozenset({"failed", "deleted", "stopped"})


# a workflow's status in lower case (`completed`), as document 000's SDK compares it and as weft spells every
# other status; the REST step API keeps document 004's upper case
LowerStatus = Annotated[str, AfterValidator(str.lower)]


class Workflow(WorkflowOut):
    status: LowerStatus


class WorkflowSummary(WorkflowSummaryOut):
    status: LowerStatus


class Metrics(DeploymentMetrics):
    """A deployment's metrics; the period's values (`metrics.request_count`) are also read directly
    (`request_count`), as document 001's SDK example does."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            return getattr(self.__dict__["metrics"], name)


class Resource:
    def __init__(self, transport: Any) -> None:
        self._t = transport


def pages(transport: Any, path: str, items: str, model: Any, params: dict[str, Any] | None = None,
          page_size: int = PAGE_SIZE) -> Iterator[Any]:
    """Every item of a list, fetched `page_size` at a time (limit/offset) until a short page or the total."""
    offset: int | None = 0
    while offset is not None:
        body = transport.request("GET", path, params={**(params or {}), "limit": page_size, "offset": offset})
        batch, offset = next_page(body, items, offset, page_size)
        yield from (model.model_validate(item) for item in batch)


def next_page(body: dict[str, Any], items: str, offset: int, page_size: int) -> tuple[list[Any], int | None]:
    """A list response's items and the next page's offset: None after a short page or at the total."""
    batch = body[items]
    offset += len(batch)
    total = body.get("total", body.get("meta", {}).get("total"))
    return batch, None if len(batch) < page_size or (total is not None and offset >= total) else offset


def until(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float | None, poll: float, what: str,
          on_progress: Callable[[Any], None] | None = None) -> Any:
    """`read()` polled every `poll` seconds until `done` says so (`on_progress` gets each value); TimeoutError
    after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = read()
        if on_progress:
            on_progress(found)
        if done(found):
            return found
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} is still {found.status} after {timeout} s")
        time.sleep(poll)


def finished(found: Any) -> bool:
    """A workflow, job or evaluation that completed, failed or was cancelled."""
    return found.status in RUN_TERMINAL


def validated(found: DatasetOut) -> bool:
    """An uploaded dataset that is `ready`; `Failed` with the reason when its validation failed."""
    if found.status == "processing":
        return False
    if found.status != "ready":
        raise Failed(f"dataset {found.id} is {found.status}: {found.error}", {"dataset_id": found.id})
    return True


def served(found: DeploymentOut) -> bool:
    """A deployment that serves; `Failed` once it cannot any more."""
    if found.status in DOWN:
        raise Failed(f"deployment {found.id} is {found.status}", {"deployment_id": found.id, "status": found.status})
    return found.status in READY


class LogStream:
    """A followed job log: the last line received (sent back as Last-Event-ID on a reconnect, so no line
    is lost or repeated) and the drops in a row since a line arrived."""

    def __init__(self, job_id: str, after: int, max_reconnects: int) -> None:
        self.job_id, self.last, self.max_reconnects = job_id, after, max_reconnects
        self.failures, self.ended = 0, False

    def headers(self) -> dict[str, str]:
        return {"Accept": "text/event-stream", "Last-Event-ID": str(self.last)}

    def take(self, event: str, event_id: str | None, data: str) -> LogEvent | None:
        """The event's log line, or None (`ended` is set by the stream's end event)."""
        if event == "end":
            self.ended = True
        elif event_id is not None and event_id.isdigit():
            self.last, self.failures = int(event_id), 0
            return LogEvent(id=self.last, text=data)
        return None

    def dropped(self) -> float:
        """The seconds to wait before reconnecting; ConnectionError after `max_reconnects` drops in a row."""
        self.failures += 1
        if self.failures > self.max_reconnects:
            raise ConnectionError(f"the log stream of job {self.job_id} dropped {self.failures} times in a row")
        return min(5.0, 0.2 * 2**self.failures)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str | None, str]]:
    """(event, id, data) of each Server-Sent Event in a stream of lines."""
    event, event_id, data = "message", None, []
    for line in lines:
        if not line:
            if data or event != "message":
                yield event, event_id, "\n".join(data)
            event, event_id, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
            elif field == "event":
                event = value


def clean(**fields: Any) -> dict[str, Any]:
    """The given fields without the ones left at None."""
    return {k: v for k, v in fields.items() if v is not None}


class Workflows(Resource):
    """Workflows: document 000's create/start/get and document 004's step API."""

    def create(self, name: str, workflow_type: str, config: dict[str, Any], description: str | None = None) -> WorkflowCreated:
        """Store a whole workflow from one config (not started: see `start`). A `dataset.primary` that is a
        file on this machine is uploaded first and referred to by its id."""
        config = with_uploaded_dataset(Datasets(self._t), config)
        return self._t.request("POST", "/workflows", WorkflowCreated, json=clean(
            name=name, workflow_type=workflow_type, config=config, description=description))

    def start(self, workflow_id: str) -> WorkflowStarted:
        return self._t.request("POST", f"/workflows/{workflow_id}/start", WorkflowStarted)

    def get(self, workflow_id: str) -> Workflow:
        return self._t.request("GET", f"/workflows/{workflow_id}", Workflow)

    def cancel(self, workflow_id: str) -> Workflow:
        return self._t.request("POST", f"/workflows/{workflow_id}/cancel", Workflow)

    def retry(self, workflow_id: str) -> Workflow:
        return self._t.request("POST", f"/workflows/{workflow_id}/retry", Workflow)

    def list(self, workflow_type: str | None = None, status: str | None = None) -> Iterator[WorkflowSummary]:
        """Every workflow of the caller, newest first (paged as it is iterated)."""
        return pages(self._t, "/workflows", "data", WorkflowSummary, clean(workflow_type=workflow_type, status=status))

    def step(self, workflow_type: str, step_number: int, data: dict[str, Any], *, workflow_id: str | None = None,
             total_steps: int | None = None, trigger: bool = False) -> Workflow:
        """Post one step of a step-numbered workflow (document 004)."""
        body = {**data, "step_number": step_number, "trigger_workflow": trigger,
                **clean(workflow_id=workflow_id, workflow_total_steps=total_steps)}
        return self._t.request("POST", step_path(workflow_type), Workflow, json=body)

    def run(self, workflow_type: str, *steps: dict[str, Any], wait: bool = True, timeout: float | None = None,
            on_progress: Callable[[Workflow], None] | None = None) -> Workflow:
        """Post every step in order (the last one triggers the run), then wait for the run to finish."""
        if not steps:
            raise ValueError("run needs at least one step")
        wf = None
        for number, data in enumerate(steps, 1):
            wf = self.step(workflow_type, number, data, workflow_id=wf.id if wf else None,
                           total_steps=None if wf else len(steps), trigger=number == len(steps))
        assert wf is not None
        return self.wait(wf.id, timeout=timeout, on_progress=on_progress) if wait else wf

    def wait(self, workflow_id: str, timeout: float | None = None, poll: float = 2.0,
             on_progress: Callable[[Workflow], None] | None = None) -> Workflow:
        """The workflow once its run has finished (completed, failed or cancelled); `on_progress` gets each
        view read meanwhile. TimeoutError after `timeout` seconds."""
        return until(lambda: self.get(workflow_id), finished, timeout, poll, f"workflow {workflow_id}", on_progress)


def local_file(config: dict[str, Any]) -> Path | None:
    """Document 000's `dataset.primary` when it names a file on the caller's machine."""
    dataset = config.get("dataset")
    primary = dataset.get("primary") if isinstance(dataset, dict) else None
    return Path(primary) if isinstance(primary, str) and Path(primary).is_file() else None


def with_dataset_id(config: dict[str, Any], dataset_id: str) -> dict[str, Any]:
    rest = {k: v for k, v in config["dataset"].items() if k != "primary"}
    return {**config, "dataset": {**rest, "id": dataset_id}}


def with_uploaded_dataset(datasets: Datasets, config: dict[str, Any]) -> dict[str, Any]:
    if (path := local_file(config)) is None:
        return config
    return with_dataset_id(config, datasets.wait(datasets.upload(path, progress=False).id).id)


def deployed(out: DeployOut, wf: Workflow) -> DeployOut:
    """The deploy's answer once its workflow finished: `active`, or `Failed` with the workflow's reason."""
    if wf.status != "completed":
        raise Failed(f"the deploy of model {out.model_id} is {wf.status}: {wf.reason}",
                     {"workflow_id": wf.id, "endpoint_id": out.id, "status": wf.status})
    return out.model_copy(update={"status": "active"})


def step_path(workflow_type: str) -> str:
    for path, name in STEP_ROUTES:
        if name == workflow_type:
            return path
    raise ValueError(f"{workflow_type!r} has no step API; one of {', '.join(n for _, n in STEP_ROUTES)}")


class Models(Resource):
    def list(self, **filters: Any) -> Iterator[ModelSummary]:
        """Every model (filters: type, status, base_model, job_id, date_from, date_to)."""
        return pages(self._t, "/models", "data", ModelSummary, clean(**filters))

    def get(self, model_id: str) -> ModelDetail:
        return self._t.request("GET", f"/models/{model_id}", ModelDetail)

    def create(self, **record: Any) -> ModelRecord:
        """Register a model record (document 002's `POST /models`)."""
        return self._t.request("POST", "/models", ModelRecord, json=record)

    def delete(self, model_id: str) -> ModelDeleted:
        return self._t.request("DELETE", f"/models/{model_id}", ModelDeleted)

    def export(self, model_id: str, format: str = "gguf", quantization: str | None = None,
               **options: Any) -> ExportStarted:
        return self._t.request("POST", f"/models/{model_id}/export", ExportStarted,
                               json=clean(format=format, quantization=quantization, **options))

    def deploy(self, model_id: str, *, wait: bool = True, timeout: float = 900, **config: Any) -> DeployOut:
        """Serve the model behind an OpenAI-compatible endpoint (document 000's body: endpoint_type,
        instance_count, auto_scaling, endpoint_name, ...); unless `wait=False`, return once it serves
        (`Failed` if its deploy workflow did not complete)."""
        out = self._t.request("POST", f"/models/{model_id}/deploy", DeployOut, json=config)
        if not wait:
            return out
        return deployed(out, Workflows(self._t).wait(out.workflow_id, timeout=timeout))

    def download(self, model_id: str, path: str | Path, progress: bool = True) -> Path:
        """Stream the model's ZIP to `path`: a file, or a folder (an existing one, or a path ending in `/`)
        that gets the server-given file name."""
        response = self._t.send("GET", f"/models/{model_id}/download", stream=True)
        try:
            target = download_target(Path(path), str(path).endswith("/"), response, model_id)
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            partial = target.with_name(target.name + ".part")
            with bar(f"model {model_id}", total, progress) as advance, partial.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    advance(len(chunk))
            partial.replace(target)  # a cut download never leaves a file that looks whole
            return target
        finally:
            response.close()


def download_target(path: Path, folder: bool, response: httpx.Response, model_id: str) -> Path:
    """Where a download goes (its folder created): `path`, or inside it under the server's file name."""
    if folder or path.is_dir():
        name = response.headers.get("content-disposition", "").partition("filename=")[2].strip('"')
        path = path / (name or f"model-{model_id}.zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class Datasets(Resource):
    def upload(self, path: str | Path, name: str | None = None, description: str | None = None,
               progress: bool = True) -> DatasetOut:
        """Upload a JSONL/JSON/CSV/Parquet file (multipart), with a progress bar."""
        path = Path(path)
        with path.open("rb") as file, bar(f"upload {path.name}", path.stat().st_size, progress) as advance:
            return self._t.request("POST", "/datasets/upload", DatasetOut,
                                   files={"file": (path.name, CountingReader(file, advance))},
                                   data=clean(name=name or path.stem, description=description))

    def get(self, dataset_id: str) -> DatasetOut:
        return self._t.request("GET", f"/datasets/{dataset_id}", DatasetOut)

    def wait(self, dataset_id: str, timeout: float = 300, poll: float = 0.5) -> DatasetOut:
        """The dataset once its upload is validated (`ready`); `Failed` with the reason if it is not."""
        return until(lambda: self.get(dataset_id), validated, timeout, poll, f"dataset {dataset_id}")

    def list(self) -> Iterator[DatasetOut]:
        return pages(self._t, "/datasets", "data", DatasetOut)

    def delete(self, dataset_id: str) -> None:
        return self._t.request("DELETE", f"/datasets/{dataset_id}")

    def analyze(self, dataset_id: str, **options: Any) -> AnalysisStarted:
        return self._t.request("POST", f"/datasets/{dataset_id}/analyze", AnalysisStarted, json=options or None)

    def analysis(self, dataset_id: str) -> AnalysisOut:
        return self._t.request("GET", f"/datasets/{dataset_id}/analysis", AnalysisOut)


class Jobs(Resource):
    """Fine-tuning jobs (document 003)."""

    def create(self, config: dict[str, Any]) -> JobCreated:
        return self._t.request("POST", "/jobs", JobCreated, json={"config": config})

    def get(self, job_id: str) -> JobOut:
        return self._t.request("GET", f"/jobs/{job_id}", JobOut)

    def list(self, status: str | None = None) -> Iterator[JobOut]:
        return pages(self._t, "/jobs", "jobs", JobOut, clean(status=status))

    def cancel(self, job_id: str) -> JobCancelled:
        return self._t.request("POST", f"/jobs/{job_id}/cancel", JobCancelled)

    def logs(self, job_id: str, lines: int | None = None, follow: bool = False) -> Any:
        """The last `lines` log lines (`JobLogs`), or with `follow` every line as it is written, from the
        first, until the job has finished (`LogEvent`s over SSE; a dropped connection is resumed after the
        last line received, so none is lost or repeated)."""
        if not follow:
            return self._t.request("GET", f"/jobs/{job_id}/logs", JobLogs, params=clean(lines=lines))
        return self.follow(job_id)

    def follow(self, job_id: str, after: int = 0, max_reconnects: int = 20) -> Iterator[LogEvent]:
        stream = LogStream(job_id, after, max_reconnects)
        while True:
            try:
                response = self._t.send("GET", f"/jobs/{job_id}/logs", stream=True, headers=stream.headers(),
                                        timeout=httpx.Timeout(self._t.timeout, read=None))
                try:
                    for event in sse_events(response.iter_lines()):
                        if (line := stream.take(*event)) is not None:
                            yield line
                        elif stream.ended:
                            return
                finally:
                    response.close()
            except (httpx.TransportError, httpx.StreamError):
                pass
            time.sleep(stream.dropped())  # the stream ended without its end event: reconnect after the last line


class Evaluations(Resource):
    def create(self, model_id: str, **settings: Any) -> EvaluationCreated:
        """Compare the model with its base (document 002: test_set_path or dataset_id, base_model_name, ...)."""
        return self._t.request("POST", f"/models/{model_id}/evaluate", EvaluationCreated, json=settings)

    def get(self, evaluation_id: str) -> EvaluationOut:
        return self._t.request("GET", f"/evaluations/{evaluation_id}", EvaluationOut)

    def list(self, model_id: str | None = None, status: str | None = None) -> EvaluationList:
        return self._t.request("GET", "/evaluations", EvaluationList, params=clean(model_id=model_id, status=status))

    def wait(self, evaluation_id: str, timeout: float | None = None, poll: float = 2.0) -> EvaluationOut:
        return until(lambda: self.get(evaluation_id), finished, timeout, poll, f"evaluation {evaluation_id}")


class Endpoints(Resource):
    """LLM endpoints (document 000's deployments of fine-tuned models)."""

    def list(self, status: str | None = None) -> EndpointList:
        return self._t.request("GET", "/endpoints", EndpointList, params=clean(status=status))

    def get(self, endpoint_id: str) -> EndpointOut:
        return self._t.request("GET", f"/endpoints/{endpoint_id}", EndpointOut)

    def delete(self, endpoint_id: str) -> EndpointOut:
        return self._t.request("DELETE", f"/endpoints/{endpoint_id}", EndpointOut)


class Deployments(Resource):
    """Deployments (documents 001 and 003): scale, versions, rollback."""

    def list(self, status: str | None = None) -> Iterator[DeploymentOut]:
        return pages(self._t, "/deployments", "items", DeploymentOut, clean(status=status))

    def get(self, deployment_id: str) -> DeploymentOut:
        return self._t.request("GET", f"/deployments/{deployment_id}", DeploymentOut)

    def delete(self, deployment_id: str) -> DeploymentDeleted:
        return self._t.request("DELETE", f"/deployments/{deployment_id}", DeploymentDeleted)

    def update(self, deployment_id: str, **changes: Any) -> DeploymentUpdated:
        """name, memory_mb, timeout_seconds, min_instances, max_instances, traffic."""
        return self._t.request("PATCH", f"/deployments/{deployment_id}", DeploymentUpdated, json=changes)

    def scale(self, deployment_id: str, min_instances: int | None = None,
              max_instances: int | None = None) -> DeploymentUpdated:
        if min_instances is None and max_instances is None:
            raise ValueError("scale needs min_instances or max_instances")
        return self.update(deployment_id, **clean(min_instances=min_instances, max_instances=max_instances))

    def versions(self, deployment_id: str) -> list[VersionOut]:
        return self._t.request("GET", f"/deployments/{deployment_id}/versions", VersionList).versions

    def rollback(self, deployment_id: str, version: str) -> DeploymentUpdated:
        return self._t.request("POST", f"/deployments/{deployment_id}/rollback", DeploymentUpdated,
                               json={"version": version})

    def metrics(self, deployment_id: str, hours: float = 24, resolution: str = "1h") -> Metrics:
        return self._t.request("GET", f"/metrics/{deployment_id}", Metrics,
                               params={"hours": hours, "resolution": resolution})

    def predict(self, deployment_id: str, data: Any) -> PredictionResult:
        """A classic model's prediction (document 001): one example or a batch."""
        return self._t.request("POST", f"/predict/{deployment_id}", PredictionResult, json={"data": data})

    def wait(self, deployment_id: str, timeout: float = 600, poll: float = 2.0) -> DeploymentOut:
        """The deployment once it serves; `Failed` if it failed, TimeoutError after `timeout` s."""
        return until(lambda: self.get(deployment_id), served, timeout, poll, f"deployment {deployment_id}")


class Deployment:
    """A classic model's deployment (document 001's SDK object)."""

    def __init__(self, deployments: Deployments, created: ClassicDeployCreated) -> None:
        self._deployments, self.created = deployments, created
        self.id, self.name, self.version, self.endpoint_url = created.id, created.name, created.version, created.endpoint_url
        self.status = created.status

    def __repr__(self) -> str:
        return f"Deployment(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    def wait(self, timeout: float = 600) -> Deployment:
        self.status = self._deployments.wait(self.id, timeout=timeout).status
        return self

    def predict(self, data: Any) -> PredictionResult:
        return self._deployments.predict(self.id, data)

    def get_metrics(self, hours: float = 24) -> Metrics:
        return self._deployments.metrics(self.id, hours=hours)

    def versions(self) -> list[VersionOut]:
        return self._deployments.versions(self.id)

    def rollback(self, version: str) -> DeploymentUpdated:
        return self._deployments.rollback(self.id, version)


class Inference(Resource):
    def predict(self, model_id: str, prompt: str, **generation: Any) -> PredictionOut:
        """Generate from a deployed model (document 000): max_tokens, temperature, top_p."""
        return self._t.request("POST", "/inference/predict", PredictionOut,
                               json={"model_id": model_id, "prompt": prompt, **generation})

    def batch_predict(self, model_id: str, requests: list[dict[str, str]], **generation: Any) -> BatchOut:
        """Several prompts at once: `requests` is a list of `{"id", "prompt"}`."""
        return self._t.request("POST", "/inference/batch-predict", BatchOut,
                               json={"model_id": model_id, "requests": requests, **generation})


class Monitoring(Resource):
    def metrics(self) -> MetricsOverview:
        return self._t.request("GET", "/monitoring/metrics", MetricsOverview)

    def drift_alerts(self, status: str | None = None) -> Iterator[DriftAlertOut]:
        return pages(self._t, "/monitoring/drift-alerts", "data", DriftAlertOut, clean(status=status))


class Webhooks(Resource):
    def create(self, url: str, events: list[str], secret: str | None = None) -> WebhookCreated:
        return self._t.request("POST", "/webhooks", WebhookCreated, json=clean(url=url, events=events, secret=secret))

    def list(self) -> Iterator[WebhookOut]:
        return pages(self._t, "/webhooks", "data", WebhookOut)

    def get(self, webhook_id: str) -> WebhookOut:
        return self._t.request("GET", f"/webhooks/{webhook_id}", WebhookOut)

    def delete(self, webhook_id: str) -> None:
        return self._t.request("DELETE", f"/webhooks/{webhook_id}")

    def test(self, webhook_id: str) -> DeliveryOut:
        return self._t.request("POST", f"/webhooks/{webhook_id}/test", DeliveryOut)

    @staticmethod
    def verify(signature_header: str | None, body: bytes | str, secret: str, tolerance: float = 300) -> bool:
        """Whether an `X-Weft-Signature` header signs this raw body with the webhook's secret (and is
        at most `tolerance` seconds old)."""
        from weft.webhooks.signing import verify

        return verify(secret, body, signature_header, tolerance=tolerance)


class Platforms(Resource):
    def list(self) -> PlatformList:
        return self._t.request("GET", "/platforms", PlatformList)

    def connect(self, name: str, api_key: str) -> PlatformConnected:
        return self._t.request("POST", f"/platforms/{name}/connect", PlatformConnected,
                               json={"credentials": {"api_key": api_key}})

    def disconnect(self, name: str) -> PlatformDisconnected:
        return self._t.request("DELETE", f"/platforms/{name}", PlatformDisconnected)

    def resources(self, provider: str | None = None, available: bool | None = None) -> ResourceList:
        return self._t.request("GET", "/resources", ResourceList, params=clean(provider=provider, available=available))
