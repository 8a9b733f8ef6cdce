"""Fixtures of the in-process API tests."""

from __future__ import annotations

import pytest
from prefect import flow


@flow(name="not_started")
def not_started() -> None:
    """Stands for a workflow's flow: its runs stay Scheduled, no worker takes them."""


@pytest.fixture
def fake_trigger(monkeypatch, prefect_server) -> list[tuple[str, str, dict]]:
    """Workflow starts create a Scheduled flow run that never runs (the test server has no deployments);
    the workflow rows are real. Returns the (workflow type, workflow id, spec) of every start."""
    from prefect.client.orchestration import get_client

    from weft import runs

    started: list[tuple[str, str, dict]] = []

    def trigger(wt, workflow_id, spec, **kwargs):
        started.append((wt.name, workflow_id, spec))
        with get_client(sync_client=True) as client:
            return str(client.create_flow_run(not_started, name=f"{wt.name} {workflow_id[:8]}").id)

    monkeypatch.setattr(runs, "trigger", trigger)
    return started
