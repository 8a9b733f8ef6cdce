"""Training jobs (document 003) are fine_tune workflows: the job id is the workflow id. This module
translates a job `config` into the workflow's steps and reads a job's progress, logs and outputs."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import datetime, timedelta
from itertools import takewhile
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlmodel import Session, or_, select

from weft import runs
from weft.clock import utcnow
from weft.compute.placement import chosen_resource
from weft.datasets.uploads import import_local_file
from weft.errors import Invalid
from weft.export.formats import unavailable
from weft.schemas.jobs import LogLine
from weft.statuses import TERMINAL
from weft.tables import Adapter, Dataset, Model
from weft.tracking import tracker_unavailable
from weft.training.config import quantization_refusal

ALGORITHMS = {"lora": "lora", "qlora": "qlora", "dora": "dora"}
QUANTIZATION = {None: None, "none": None, "int4": "nf4", "nf4": "nf4", "4bit": "nf4"}
CONFIG_FIELDS = ("rank", "alpha", "dropout", "target_modules", "learning_rate", "batch_size",
                 "gradient_accumulation_steps", "num_epochs", "max_steps", "warmup_steps", "validation_split",
                 "checkpoint_steps", "max_seq_length", "logging_steps", "seed")
PLACEMENT_AND_TRACKING = ("provider", "resource_id", "experiment_tracker", "project_name")  # kept as given
LOG_PAGE = 200
SETTLE_SECONDS = 3.0  # > Prefect's log batch interval (PREFECT_LOGGING_TO_API_BATCH_INTERVAL, 2 s)
FOLLOW_POLL_SECONDS = 2.0  # a followed run's logs arrive in 2 s batches (PREFECT_LOGGING_TO_API_BATCH_INTERVAL)
END_QUIET_SECONDS = 3.0  # after the run has finished, stop once no late line has come for this long
FLOPS_PER_SECOND = {"cpu": 5e10, "gpu": 1e14}  # sustained training throughput assumed for the estimate


class InvalidConfig(ValueError):
    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def resolve_base_model(session: Session, user_id: str, ref: str) -> Model:
    """A registered model by id, name or uri (document 003 passes a hub name)."""
    model = session.get(Model, ref)
    if model is None or model.user_id != user_id:
        model = session.exec(select(Model).where(Model.user_id == user_id, Model.storage_uri.is_not(None),
                                                 or_(Model.name == ref, Model.uri == ref))).first()
    if model is None or not model.storage_uri:
        raise InvalidConfig(f"base_model {ref!r} is not a registered model with weights: add it first "
                            "(POST /api/v1/models/local-model-workflow)", {"field": "base_model"})
    return model


def job_steps(session: Session, user_id: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Steps 1 and 2 of the fine_tune workflow for a document-003 job config."""
    if "base_model" not in config:
        raise InvalidConfig("base_model is required", {"field": "base_model"})
    model = resolve_base_model(session, user_id, str(config["base_model"]))
    dataset_id = config.get("dataset_id")
    if dataset_id is None and config.get("dataset_path"):
        try:
            dataset_id = import_local_file(session, user_id, str(config["dataset_path"])).id
        except ValueError as exc:
            raise InvalidConfig(f"dataset_path: {exc}", {"field": "dataset_path"}) from exc
    if dataset_id is None:
        raise InvalidConfig("dataset_id or dataset_path is required (upload a file with POST /api/v1/datasets/upload)",
                            {"field": "dataset_id"})
    algorithm = str(config.get("algorithm", config.get("method", "lora"))).lower()
    if algorithm not in ALGORITHMS:
        raise InvalidConfig(f"algorithm must be one of {sorted(ALGORITHMS)}", {"field": "algorithm"})
    quantization = config.get("quantization")
    if refusal := quantization_refusal(quantization):
        raise InvalidConfig(refusal, {"field": "quantization"})
    if quantization not in QUANTIZATION:
        raise InvalidConfig(f"quantization must be one of {sorted(k for k in QUANTIZATION if k)}",
                            {"field": "quantization"})
    if why := tracker_unavailable(config.get("experiment_tracker")):
        raise InvalidConfig(why, {"field": "experiment_tracker"})
    train = {k: config[k] for k in CONFIG_FIELDS if k in config}
    train["method"] = ALGORITHMS[algorithm]
    if QUANTIZATION[quantization]:
        train["quantization"] = QUANTIZATION[quantization]
    name = config.get("name") or config.get("project_name") or f"{model.name}-{algorithm}"
    step2: dict[str, Any] = {"name": name, "config": train}
    step2 |= {k: config[k] for k in PLACEMENT_AND_TRACKING if config.get(k) is not None}
    try:
        chosen_resource(session, step2)  # refused before anything is stored
    except Invalid as exc:
        raise InvalidConfig(exc.message, {"field": exc.details["errors"][0]["field"]}) from exc
    if (export := config.get("export")) is not None:  # {"format": "gguf", "quantization": "q8_0"}
        if isinstance(export, dict) and export.get("format", "gguf") == "gguf" and \
                (why := unavailable(str(export.get("quantization", "q8_0")).lower())):
            raise InvalidConfig(why, {"field": "export.quantization"})
        step2["export"] = export  # the rest is validated with the step
    return {"base_model": model.id, "dataset_id": dataset_id}, step2


def job_config_of_workflow(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Document 000's fine-tuning workflow `config` (model, dataset, fine_tuning) as a document-003 job config."""
    model, dataset = config.get("model") or {}, config.get("dataset") or {}
    tuning = config.get("fine_tuning") or {}
    if not isinstance(model, dict) or not isinstance(dataset, dict) or not isinstance(tuning, dict):
        raise InvalidConfig("config.model, config.dataset and config.fine_tuning must be objects", {"field": "config"})
    params = dict(tuning.get("parameters") or {})
    if "epochs" in params:
        params["num_epochs"] = params.pop("epochs")
    job: dict[str, Any] = {"name": name, "algorithm": tuning.get("method", "lora"), **params}
    if model.get("id") or model.get("name"):
        job["base_model"] = model.get("id") or model["name"]
    if dataset.get("id"):
        job["dataset_id"] = dataset["id"]
    elif dataset.get("primary"):
        job["dataset_path"] = dataset["primary"]
    if "validation_split" in dataset:
        job["validation_split"] = dataset["validation_split"]
    return job


def estimated_minutes(session: Session, spec: dict[str, Any], gpu: bool) -> float | None:
    """6 x parameters x tokens per step x steps over an assumed sustained FLOP rate."""
    model, ds = session.get(Model, spec["base_model"]), session.get(Dataset, spec["dataset_id"])
    params, records = (model.details or {}).get("parameter_count"), ds.record_count if ds else None
    if not params or not records:
        return None
    c = spec["config"]
    per_step = c["batch_size"] * c["gradient_accumulation_steps"]
    steps = c.get("max_steps") or math.ceil(records * (1 - c["validation_split"]) / per_step * c["num_epochs"])
    flops = 6 * params * per_step * c["max_seq_length"] * steps
    return round(flops / FLOPS_PER_SECOND["gpu" if gpu else "cpu"] / 60, 1)


def outputs(session: Session, workflow_id: str) -> tuple[Model | None, Adapter | None]:
    adapter = session.exec(select(Adapter).where(Adapter.workflow_id == workflow_id)).first()
    return (session.get(Model, adapter.model_id) if adapter else None), adapter


def progress_of(flow_run_id: str) -> float:
    """The training progress artifact of the run, 0..1."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with runs.prefect_client() as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]), type=ArtifactFilterType(any_=["progress"])))
    values = [float(a.data) for a in artifacts if isinstance(a.data, (int, float))]
    return round(min(values) / 100, 4) if values else 0.0


def log_line(log: Any) -> LogLine:
    import logging

    return LogLine(timestamp=log.timestamp.isoformat(), level=logging.getLevelName(log.level), message=log.message,
                   source=log.name)


def read_logs(flow_run_id: str, *, offset: int, limit: int, newest_first: bool, client: Any = None) -> list[LogLine]:
    """Log lines of a run from the Prefect server (weft keeps no copy), paged 200 at a time (with
    `client`, an open sync Prefect client, instead of a new one).

    Lines that arrive while it pages shift the later pages, so a line may come twice; it is kept once."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
    sort = LogSort.TIMESTAMP_DESC if newest_first else LogSort.TIMESTAMP_ASC
    lines: list[LogLine] = []
    seen: set[UUID] = set()
    read = 0
    with nullcontext(client) if client is not None else runs.prefect_client() as client:
        while len(lines) < limit:
            wanted = min(LOG_PAGE, limit - len(lines))
            page = client.read_logs(log_filter=log_filter, limit=wanted, offset=offset + read, sort=sort)
            read += len(page)
            fresh = [log for log in page if log.id not in seen]
            seen.update(log.id for log in fresh)
            lines += [log_line(log) for log in fresh]
            if len(page) < wanted:
                break
    return lines


def logs_of(flow_run_id: str, lines: int) -> list[LogLine]:
    """The run's last `lines` log lines, oldest first."""
    return list(reversed(read_logs(flow_run_id, offset=0, limit=lines, newest_first=True)))


LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "critical": 50}


def push_log(flow_run_id: str, level: str, message: str, source: str) -> None:
    """Add a line (e.g. from a training kernel) to the run's logs on the Prefect server."""
    runs.log_to_run(flow_run_id, LEVELS[level.lower()], message, name=f"weft.push.{source}")


class Update(BaseModel):
    """A change in a followed run: its status, or its next log line (`position` is 1-based)."""

    status: str | None = None
    reason: str | None = None
    position: int = 0
    line: LogLine | None = None


def follow(flow_run_id: str, after: int = 0, poll: float = FOLLOW_POLL_SECONDS,
           idle_timeout: float = 300.0) -> Iterator[Update]:
    """The run's status changes and every log line after position `after`, as they reach the Prefect
    server. Ends once the run has finished and its late log batches have arrived (no new line for
    END_QUIET_SECONDS), or after `idle_timeout` seconds without a line.

    Positions count lines in timestamp order, and processes ship their logs in batches (every 2 s by
    default), so a line may reach the server after later-stamped ones from another process. Lines
    are therefore released only once they are `SETTLE_SECONDS` old (all of them once the run has
    ended): that keeps positions stable, so a reconnect after position N neither repeats nor skips.

    Cost: one Prefect client for the whole stream (a client per request cost a TLS context and a
    CSRF-token round trip each time), two requests (status, logs) per `poll` seconds; a line that
    has been read but is not settled yet is released when it settles rather than at the next poll
    (polls stay at least `poll / 2` apart)."""
    sent, last_status = after, None
    last_line_at, quiet_since = time.monotonic(), None
    with runs.prefect_client() as client:
        while True:
            status, reason = runs.run_statuses([flow_run_id], client=client)[flow_run_id]
            if status != last_status:
                last_status = status
                yield Update(status=status, reason=reason)
            batch = read_logs(flow_run_id, offset=sent, limit=LOG_PAGE, newest_first=False, client=client)
            held: list[LogLine] = []
            if status not in TERMINAL:
                cutoff = utcnow() - timedelta(seconds=SETTLE_SECONDS)
                released = list(takewhile(
                    lambda line, cutoff=cutoff: datetime.fromisoformat(line.timestamp) <= cutoff, batch))
                held = batch[len(released):]
            else:
                released = batch
            for line in released:
                sent += 1
                yield Update(position=sent, line=line)
            now = time.monotonic()
            if released:
                last_line_at = now
            if status in TERMINAL and not batch:
                quiet_since = now if quiet_since is None else quiet_since
                if now - quiet_since >= END_QUIET_SECONDS:
                    return
            else:
                quiet_since = None
            if now - last_line_at >= idle_timeout:
                return
            if len(released) == LOG_PAGE:
                continue  # catching up: the next page at once
            wait = poll
            if held:  # the oldest unsettled line: release it when it settles (polls stay >= poll / 2 apart)
                settles_at = datetime.fromisoformat(held[0].timestamp) + timedelta(seconds=SETTLE_SECONDS)
                wait = min(poll, max(poll / 2, (settles_at - utcnow()).total_seconds() + 0.01))
            time.sleep(wait)


def log_events(flow_run_id: str, after: int) -> Iterator[str]:
    """Server-Sent Events of the run's logs: `id` is the line's 1-based position, so a client that
    reconnects with Last-Event-ID gets every later line once."""
    for update in follow(flow_run_id, after):
        if update.line is not None:
            clock = update.line.timestamp[11:19]
            message = update.line.message.replace("\n", "\ndata: ")  # a multi-line message stays one event
            yield f"id: {update.position}\ndata: [{clock}] [{update.line.level}] {message}\n\n"
    yield "event: end\ndata: {}\n\n"
