"""Flow-run names a person recognises in the Prefect UI (`fine_tune · SmolLM2 135M · job 1a2b3c`)
instead of Prefect's adjective-animal ones. Each flow's `flow_run_name` is a `run_name(...)` of parts
that read the run's parameters and, where the name needs it, one row's name (a model, a dataset)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.runtime import flow_run
from pydantic import BaseModel

from weft.db import session_scope

Part = Callable[[], str | None]
SEP = " · "


def params() -> dict[str, Any]:
    """The run's parameters (the flow's arguments)."""
    return flow_run.parameters or {}


def short(value: Any) -> str:
    return str(value)[:6]


def _spec() -> dict[str, Any]:
    spec = params().get("spec")  # a model when the flow is called, a dict when a deployment starts it
    return spec.model_dump() if isinstance(spec, BaseModel) else spec if isinstance(spec, dict) else {}


def _row_name(table: type, row_id: str) -> str:
    with session_scope() as s:
        row = s.get(table, row_id)
        return row.name if row is not None else short(row_id)


def _label(value: Any, table: type | None, label: str | None) -> str | None:
    if value in (None, ""):
        return None
    if table is not None:
        return _row_name(table, str(value))
    return f"{label} {short(value)}" if label else str(value)


def spec(field: str, table: type | None = None) -> Part:
    """The spec's `field`; with `table`, the name of the `table` row whose id it is."""
    return lambda: _label(_spec().get(field), table, None)


def param(name: str, table: type | None = None, label: str | None = None, default: str | None = None) -> Part:
    """Parameter `name`: the name of its `table` row, or `label` and a short id, or `default` when unset."""
    return lambda: _label(params().get(name), table, label) or default


def workflow(label: str = "workflow") -> Part:
    """`workflow 1a2b3c`: the workflow the run serves (the run itself when started outside the API)."""
    return lambda: f"{label} {short(params().get('workflow_id') or flow_run.id)}"


def run_name(*parts: Part) -> Callable[[], str]:
    """A `flow_run_name` callable: the flow's name and the parts that are known, joined by ` · `."""

    def name() -> str:
        values = [flow_run.flow_name]
        for part in parts:
            try:
                value = part()
            except Exception:  # a name is never worth failing the run for
                value = None
            if value:
                values.append(value)
        return SEP.join(values)

    return name
