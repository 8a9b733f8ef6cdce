"""MLflow runs of fine-tune jobs. One run per weft job, in the experiment named by the job's
`project_name`, tagged with the job (workflow) id and its owner: params (training config, base model,
dataset), every metric the trainer logs at its step, the loss curve and the adapter files as artifacts,
and its end status. A resumed job (the flow resumes from checkpoints) continues the same run.

The tracking store is `Settings.mlflow_uri`: SQLite under the data dir by default (MLflow 3's
recommended local store; the file store is legacy), a tracking server in production.

transformers' own `MLflowCallback` is not used: it re-logs every TrainingArguments value as a param
when a job resumes (the output dir differs per attempt, and MLflow refuses changed params), ends a
crashed run FINISHED from `__del__`, and works through process-wide state (environment variables,
mlflow's active run). Here every call names its run, through an `MlflowClient`."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from weft.settings import get_settings

log = logging.getLogger(__name__)

TAG_JOB = "weft.job_id"
TAG_OWNER = "weft.owner_id"
DEFAULT_PROJECT = "weft"
LOSS_CURVE = "loss_curve.png"
ADAPTER_PATH = "adapter"
_SAFE_VALUE = re.compile(r"[\w.:-]+")  # ids put in a filter string (weft's ids are UUIDs)


def client() -> Any:
    """An `MlflowClient` on weft's tracking store (mlflow is imported on first use: ~8 s)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=get_settings().mlflow_uri)


def experiment_id(mlflow_client: Any, name: str) -> str:
    """The id of the experiment `name`, created (artifacts under `Settings.mlflow_artifacts`) or restored."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        try:
            return mlflow_client.create_experiment(name, artifact_location=get_settings().mlflow_artifacts)
        except MlflowException:  # another job created it meanwhile
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(found.experiment_id)
    return found.experiment_id


def param_value(value: Any) -> str:
    """A param as MLflow stores it (a string): text as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def scalar_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a trainer log line, with names MLflow accepts (as transformers' callback does)."""
    metrics = {}
    for key, value in logs.items():
        if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
            value = value.item()  # a scalar tensor
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics[re.sub(r"[^0-9A-Za-z_\-. :/]", "_", key)] = float(value)
    return metrics


class MlflowRun:
    """One job's open MLflow run: its trainer callback logs each log line's metrics at its step."""

    def __init__(self, mlflow_client: Any, run_id: str, logged_before: dict[str, int]) -> None:
        self.client, self.run_id = mlflow_client, run_id
        self.logged_before = logged_before  # metric -> last step logged by an earlier attempt of the job
        self.logged: set[str] = set()
        self.callbacks = [self._callback()]

    def _callback(self) -> Any:
        from transformers import TrainerCallback

        run = self

        class MlflowMetrics(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and state.is_world_process_zero:
                    run.log_metrics(scalar_metrics(logs), state.global_step)

        return MlflowMetrics()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """`metrics` at `step`, except those an earlier attempt already logged there (a resume replays the
        steps after its checkpoint)."""
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        fresh = [Metric(key, value, now, step) for key, value in metrics.items()
                 if step > self.logged_before.get(key, -1)]
        for i in range(0, len(fresh), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=fresh[i:i + MAX_METRICS_PER_BATCH])
        self.logged.update(metric.key for metric in fresh)

    def log_outputs(self, adapter_dir: Path, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """The final metrics the trainer did not log itself (at the last step), the loss curve and the
        adapter files as artifacts, and `tags`."""
        step = int(metrics.get("global_step", 0))
        self.log_metrics({k: v for k, v in metrics.items() if k not in self.logged}, step)
        if (adapter_dir / LOSS_CURVE).exists():
            self.client.log_artifact(self.run_id, str(adapter_dir / LOSS_CURVE))
        self.client.log_artifacts(self.run_id, str(adapter_dir), ADAPTER_PATH)
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def end(self, status: str) -> None:
        """FINISHED, FAILED or KILLED. Only a FINISHED that cannot be recorded raises: a failure to record a
        failure must not hide the failure itself."""
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception:
            if status == "FINISHED":
                raise
            log.warning("could not mark MLflow run %s %s", self.run_id, status, exc_info=True)


def find_run(mlflow_client: Any, experiment: str, job_id: str) -> Any | None:
    """The run of `job_id` in `experiment`, if one was started."""
    if not _SAFE_VALUE.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} cannot be used in an MLflow filter")
    found = mlflow_client.search_runs([experiment], f"tags.`{TAG_JOB}` = '{job_id}'", max_results=1)
    return found[0] if found else None


def open_run(job_id: str, owner_id: str, project: str | None, run_name: str, params: dict[str, Any]) -> MlflowRun:
    """The job's run, RUNNING: the one an earlier attempt started (continued) or a new one. `params` are
    logged once (those already in the run are kept: MLflow refuses changed params)."""
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    mlflow_client = client()
    experiment = experiment_id(mlflow_client, project or DEFAULT_PROJECT)
    run = find_run(mlflow_client, experiment, job_id)
    logged_before: dict[str, int] = {}
    if run is None:
        run = mlflow_client.create_run(experiment, run_name=run_name, tags={TAG_JOB: job_id, TAG_OWNER: owner_id})
        log.info("MLflow run %s started in experiment %s", run.info.run_id, project or DEFAULT_PROJECT)
    else:
        mlflow_client.update_run(run.info.run_id, status="RUNNING")
        for key in run.data.metrics:
            logged_before[key] = max(m.step for m in mlflow_client.get_metric_history(run.info.run_id, key))
        log.info("MLflow run %s continued (metrics logged up to step %s)", run.info.run_id,
                 max(logged_before.values(), default=0))
    new = [Param(k, param_value(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items() if k not in run.data.params]
    for i in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
        mlflow_client.log_batch(run.info.run_id, params=new[i:i + MAX_PARAMS_TAGS_PER_BATCH])
    return MlflowRun(mlflow_client, run.info.run_id, logged_before)


class RunRecord(BaseModel):
    """A job's MLflow run as read back."""

    run_id: str
    job_id: str
    project: str
    name: str
    status: str  # MLflow's: RUNNING, SCHEDULED, FINISHED, FAILED, KILLED
    metrics: dict[str, float]  # the latest value of each
    params: dict[str, str]
    start_time: datetime
    end_time: datetime | None


def _time(millis: int | None) -> datetime | None:
    return datetime.fromtimestamp(millis / 1000, UTC) if millis else None


def _pages(search: Any) -> Iterable[Any]:
    """Every item of an MLflow search, following its page tokens."""
    token = None
    while True:
        page = search(token)
        yield from page
        token = page.token
        if not token:
            return


def owner_runs(owner_id: str, project: str | None = None) -> list[RunRecord]:
    """The runs of `owner_id`'s jobs (in experiment `project`, else in all), newest first."""
    if not _SAFE_VALUE.fullmatch(owner_id):
        return []
    mlflow_client = client()
    if project is not None:
        found = mlflow_client.get_experiment_by_name(project)
        experiments = [found] if found is not None and found.lifecycle_stage == "active" else []
    else:
        experiments = list(_pages(lambda token: mlflow_client.search_experiments(page_token=token)))
    names = {e.experiment_id: e.name for e in experiments}
    if not names:
        return []
    runs = _pages(lambda token: mlflow_client.search_runs(
        list(names), f"tags.`{TAG_OWNER}` = '{owner_id}'", order_by=["attributes.start_time DESC"],
        page_token=token))
    return [RunRecord(run_id=r.info.run_id, job_id=r.data.tags[TAG_JOB], project=names[r.info.experiment_id],
                      name=r.info.run_name or r.info.run_id, status=r.info.status, metrics=dict(r.data.metrics),
                      params=dict(r.data.params), start_time=_time(r.info.start_time), end_time=_time(r.info.end_time))
            for r in runs if TAG_JOB in r.data.tags]


def best_values(run_id: str, keys: Iterable[str]) -> dict[str, float]:
    """The lowest value each of `keys` (losses) reached over the run's steps."""
    mlflow_client = client()
    best = {}
    for key in keys:
        history = mlflow_client.get_metric_history(run_id, key)
        if history:
            best[key] = min(m.value for m in history)
    return best
