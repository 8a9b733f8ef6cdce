"""Experiments (document 003): fine-tune jobs with `experiment_tracker: mlflow` are tracked in MLflow (read
back here with MLflow's own client) and listed by GET /experiments; wandb is refused."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from tests.helpers.api import assert_error, me


@flow(name="experiments_not_started")
def not_started() -> None:
    """Stands for the job's deployment run: the test runs the fine_tune flow itself."""


@pytest.fixture(scope="module")
def api(client, prefect_server):
    return client


def register(api) -> dict[str, str]:
    name = f"u{uuid.uuid4().hex[:10]}"
    r = api.post("/api/v1/auth/register", json={"email": f"{name}@example.com", "username": name,
                                                "password": "long-enough-pw"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
def pair(api, tiny_model_dir: Path) -> dict[str, Any]:
    """Two jobs created through POST /jobs (learning rates 1e-3 and 5e-3, same project), each trained by the
    fine_tune flow in-process with the spec and workflow id the API stored."""
    from prefect.client.orchestration import get_client

    from flows.fine_tune import fine_tune
    from weft import runs
    from weft.specs.training import FineTuneSpec
    from weft.testing.registry import register_dataset, register_model

    headers = register(api)
    user_id = me(api, headers)["id"]
    rows = [{"messages": [{"role": "user", "content": f"code {i}"}, {"role": "assistant", "content": f"part {i % 3}"}]}
            for i in range(24)]
    base, dataset = register_model(user_id, tiny_model_dir), register_dataset(user_id, "exp codes", rows)
    project = f"exp-{uuid.uuid4().hex[:8]}"
    started: list[tuple[str, dict]] = []

    def trigger(wt, workflow_id, spec, **kwargs):
        started.append((workflow_id, spec))
        with get_client(sync_client=True) as client:
            return str(client.create_flow_run(not_started, name=f"{wt.name} {workflow_id[:8]}").id)

    jobs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "trigger", trigger)
        for name, lr in (("exp-slow", 1e-3), ("exp-fast", 5e-3)):
            config = {"base_model": base, "dataset_id": dataset, "name": name, "algorithm": "lora", "rank": 4,
                      "alpha": 8, "batch_size": 4, "max_steps": 4, "checkpoint_steps": 2, "logging_steps": 1,
                      "learning_rate": lr, "max_seq_length": 64, "validation_split": 0.25,
                      "experiment_tracker": "mlflow", "project_name": project}
            r = api.post("/api/v1/jobs", headers=headers, json={"config": config})
            assert r.status_code == 201, r.text
            jobs[name] = r.json()["job_id"]
    assert [workflow_id for workflow_id, _ in started] == list(jobs.values())
    for workflow_id, spec in started:
        assert (spec["experiment_tracker"], spec["project_name"]) == ("mlflow", project)
        state = fine_tune(spec=FineTuneSpec.model_validate(spec), workflow_id=workflow_id, owner_id=user_id,
                          return_state=True)
        assert state.is_completed(), state.message
    return {"headers": headers, "user_id": user_id, "project": project, "jobs": jobs, "base": base,
            "dataset": dataset}


def adapter_of(job_id: str):
    from sqlmodel import select

    from weft.db import session_scope
    from weft.tables import Adapter

    with session_scope() as s:
        return s.exec(select(Adapter).where(Adapter.workflow_id == job_id)).one()


def test_get_experiments_lists_the_callers_tracked_jobs(api, pair):
    headers, project, jobs = pair["headers"], pair["project"], pair["jobs"]
    r = api.get("/api/v1/experiments", headers=headers, params={"tracker": "mlflow", "project": project})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 2 and (body["limit"], body["offset"]) == (20, 0)
    by_name = {e["name"]: e for e in body["experiments"]}
    assert [e["name"] for e in body["experiments"]] == ["exp-fast", "exp-slow"]  # newest first
    for name, lr in (("exp-slow", 1e-3), ("exp-fast", 5e-3)):
        e = by_name[name]
        assert (e["id"], e["tracker"], e["project"], e["status"]) == (jobs[name], "mlflow", project, "completed")
        m = e["metrics"]
        assert m["final_loss"] == m["loss"] > 0 and 0 < m["best_loss"] <= m["final_loss"]
        assert {"learning_rate", "grad_norm", "eval_loss", "best_eval_loss", "train_loss", "train_runtime"} <= set(m)
        assert m["global_step"] == 4 and m["best_eval_loss"] <= m["eval_loss"]
        c = e["config"]
        assert (c["learning_rate"], c["rank"], c["max_steps"], c["method"]) == (lr, 4, 4, "lora")
        assert (c["base_model"], c["base_model_id"], c["dataset_id"]) == ("tiny base", pair["base"], pair["dataset"])
        assert e["created_at"].endswith("Z") and e["ended_at"].endswith("Z")
        assert m["train_loss"] == pytest.approx(adapter_of(jobs[name]).metrics["train_loss"])  # weft's own record

    # the conventions: sort/order, fields, paging; without project the runs are listed too
    names = api.get("/api/v1/experiments", headers=headers, params={"project": project, "sort": "name",
                                                                   "order": "asc", "fields": "id,name"}).json()
    assert names["experiments"] == [{"id": jobs["exp-fast"], "name": "exp-fast"},
                                    {"id": jobs["exp-slow"], "name": "exp-slow"}]
    one = api.get("/api/v1/experiments", headers=headers, params={"limit": 1, "offset": 1}).json()
    assert one["total"] == 2 and [e["name"] for e in one["experiments"]] == ["exp-slow"]
    assert_error(api.get("/api/v1/experiments", headers=headers, params={"sort": "metrics"}), 422, "VALIDATION_ERROR")
    assert api.get("/api/v1/experiments", headers=headers, params={"project": "no-such"}).json()["experiments"] == []

    # the ids are job ids: POST /experiments/compare takes them
    r = api.post("/api/v1/experiments/compare", headers=headers, json={"experiment_ids": list(jobs.values())})
    assert r.status_code == 200, r.text
    assert len(r.json()["comparison"]["metrics"]["loss"]) == 2

    # only the caller's runs; wandb cannot be read
    assert api.get("/api/v1/experiments", headers=register(api), params={"project": project}).json()["total"] == 0
    error = assert_error(api.get("/api/v1/experiments", headers=headers, params={"tracker": "wandb"}), 422,
                         "VALIDATION_ERROR")
    assert "wandb is not installed" in error["message"] and error["details"]["available"] == ["mlflow"]


def test_the_mlflow_store_holds_params_step_metrics_and_artifacts(pair, tmp_path: Path):
    from mlflow import MlflowClient

    from weft.settings import get_settings

    client = MlflowClient(tracking_uri=get_settings().mlflow_uri)
    assert get_settings().mlflow_uri == f"sqlite:///{get_settings().home_dir / 'mlflow.db'}"
    experiment = client.get_experiment_by_name(pair["project"])
    assert experiment.artifact_location.startswith((get_settings().home_dir / "mlflow-artifacts").as_uri())
    for name, job_id in pair["jobs"].items():
        runs = client.search_runs([experiment.experiment_id], f"tags.`weft.job_id` = '{job_id}'")
        assert len(runs) == 1
        run = runs[0]
        assert (run.info.status, run.info.run_name) == ("FINISHED", name)
        assert (run.data.tags["weft.owner_id"], run.data.tags["weft.trained_method"]) == (pair["user_id"], "lora")
        assert run.data.params["dataset_records"] == "24" and run.data.params["target_modules"] == "all-linear"
        losses = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in losses) == [1, 2, 3, 4]
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "learning_rate")) == [1, 2, 3, 4]
        assert {2, 4} <= {m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")}
        top = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert top == {"loss_curve.png", "adapter"}
        files = {f.path for f in client.list_artifacts(run.info.run_id, "adapter")}
        assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= files
        local = Path(client.download_artifacts(run.info.run_id, "adapter/adapter_model.safetensors", str(tmp_path)))
        assert hashlib.sha256(local.read_bytes()).hexdigest() == adapter_of(job_id).sha256
        png = Path(client.download_artifacts(run.info.run_id, "loss_curve.png", str(tmp_path)))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resumed_job_continues_its_run_and_a_failed_one_ends_failed():
    """A second attempt of a job (the flow resuming from a checkpoint) logs into the same run, without the steps
    the first attempt already logged and without touching its params; a raise ends the run FAILED."""
    from weft.tracking import mlflow_runs, tracked_run

    job_id, owner, project = str(uuid.uuid4()), str(uuid.uuid4()), f"resume-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError), tracked_run("mlflow", job_id, owner, project, "r", {"rank": 4}) as first:
        first.log_metrics({"loss": 1.0}, 1)
        first.log_metrics({"loss": 0.9}, 2)
        raise RuntimeError("killed at step 2")
    client = mlflow_runs.client()
    assert client.get_run(first.run_id).info.status == "FAILED"
    with tracked_run("mlflow", job_id, owner, project, "r", {"rank": 8, "seed": 1}) as second:
        assert second.run_id == first.run_id and client.get_run(first.run_id).info.status == "RUNNING"
        second.log_metrics({"loss": 0.9}, 2)  # replayed after the checkpoint: already there
        second.log_metrics({"loss": 0.7}, 3)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"rank": "4", "seed": "1"}
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")) == [
        (1, 1.0), (2, 0.9), (3, 0.7)]


def test_wandb_is_refused_naming_the_field(api, tiny_model_dir: Path):
    from pydantic import ValidationError

    from weft.specs.training import AdapterSettings
    from weft.testing.registry import register_dataset, register_model

    headers = register(api)
    user_id = me(api, headers)["id"]
    config = {"base_model": register_model(user_id, tiny_model_dir), "experiment_tracker": "wandb",
              "dataset_id": register_dataset(user_id, "wandb codes", [{"prompt": "q", "completion": "a"}] * 4)}
    error = assert_error(api.post("/api/v1/jobs", headers=headers, json={"config": config}), 400, "INVALID_CONFIG")
    assert error["details"]["field"] == "experiment_tracker" and "wandb is not installed" in error["message"]
    assert api.get("/api/v1/jobs", headers=headers).json()["total"] == 0  # nothing was created
    with pytest.raises(ValidationError, match="wandb is not installed"):  # the step API and the flow's parameters
        AdapterSettings(name="x", experiment_tracker="wandb")
