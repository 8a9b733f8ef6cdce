"""Flow runs are named after what they do (`fine_tune · tiny base · job 1a2b3c`), so a person
recognises them in the Prefect UI."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from pathlib import Path

import pytest

import flows
from weft.db import session_scope
from weft.tables import Endpoint

FLOW_MODULES = sorted(m.name for m in pkgutil.iter_modules(flows.__path__) if m.name not in ("common", "names"))


def run_name(state) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


@pytest.mark.parametrize("module", FLOW_MODULES)
def test_every_flow_names_its_runs(module: str):
    flow = getattr(importlib.import_module(f"flows.{module}"), module)
    assert callable(flow.flow_run_name), f"{module} has no flow_run_name"


def test_runs_are_named_after_their_model_dataset_endpoint_and_job(prefect_server, db, tiny_model_dir: Path):
    """Each run here stops at its first step (a dataset that failed validation, a missing model): the
    name is set before that."""
    from flows.analyze_dataset import analyze_dataset
    from flows.fine_tune import fine_tune
    from flows.serve_replica import serve_replica
    from weft.specs.datasets import AnalyzeDatasetSpec
    from weft.specs.training import FineTuneSpec
    from weft.testing.registry import register_dataset, register_model, register_user

    user_id = register_user()
    dataset_id = register_dataset(user_id, "service notes", [{"text": "a"}], status="error")
    spec = FineTuneSpec(base_model=register_model(user_id, tiny_model_dir), dataset_id=dataset_id, name="tuned")
    state = fine_tune(spec=spec, owner_id=user_id, return_state=True)
    job = str(state.state_details.flow_run_id)  # started outside the API: the run is its own workflow
    assert run_name(state) == f"fine_tune · tiny base · job {job[:6]}"
    state = analyze_dataset(spec=AnalyzeDatasetSpec(dataset_id=dataset_id), owner_id=user_id, return_state=True)
    assert run_name(state) == f"analyze_dataset · service notes · workflow {str(state.state_details.flow_run_id)[:6]}"

    endpoint = Endpoint(user_id=user_id, model_id="gone", name=f"advisor-{uuid.uuid4().hex[:6]}")
    with session_scope() as s:
        s.add(endpoint)
    replica_id = str(uuid.uuid4())
    state = serve_replica(endpoint_id=endpoint.id, replica_id=replica_id, return_state=True)
    assert state.is_failed() and run_name(state) == f"serve_replica · {endpoint.name} · replica {replica_id[:6]}"
    missing = str(uuid.uuid4())  # a row that is not there: its short id stands in for its name
    state = serve_replica(endpoint_id=missing, replica_id=replica_id, return_state=True)
    assert run_name(state) == f"serve_replica · {missing[:6]} · replica {replica_id[:6]}"
