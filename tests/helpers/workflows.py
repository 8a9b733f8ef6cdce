"""Workflow fixtures for in-process API tests."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def fake_trigger(monkeypatch) -> list[tuple[str, str, dict]]:
    """Flow runs are not started (the test server has no deployments): the workflow rows are real.
    Returns the (workflow type, workflow id, spec) of every start."""
    from weft import runs

    started: list[tuple[str, str, dict]] = []

    def trigger(wt, workflow_id, spec, **kwargs):
        started.append((wt.name, workflow_id, spec))
        return str(uuid.uuid4())

    monkeypatch.setattr(runs, "trigger", trigger)
    return started
