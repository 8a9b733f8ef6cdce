"""Workflow runs in Prefect: trigger through the deployment, read state and task runs, cancel.

The Prefect server is the source of truth for run state; these helpers translate it into weft's
workflow statuses. All calls are synchronous (the API calls them from its thread pool).
"""

from __future__ import annotations

import logging
import ssl
import time
from contextlib import nullcontext
from functools import lru_cache
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Cancelling

from weft import statuses
from weft.clock import utcnow
from weft.schemas.workflows import RunView, StageView
from weft.specs import WorkflowType
from weft.statuses import TERMINAL, StageStatus, WorkflowStatus


@lru_cache(maxsize=4)
def _tls_context(skip_verify: bool, cert_file: str | None) -> ssl.SSLContext:
    if skip_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    import certifi

    return ssl.create_default_context(cafile=cert_file or certifi.where())


def prefect_client():
    """A sync Prefect client that shares one TLS context: Prefect otherwise builds one per client (loading
    the CA bundle: ~10 ms of CPU), which dominated the API's CPU while it streamed a run's logs. Same
    settings as Prefect's own (PREFECT_API_TLS_INSECURE_SKIP_VERIFY, PREFECT_API_SSL_CERT_FILE)."""
    from prefect.context import SyncClientContext
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    if (context := SyncClientContext.get()) and context.client:  # inside a run: its client, as get_client does
        return get_client(sync_client=True)
    ctx = _tls_context(bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()), PREFECT_API_SSL_CERT_FILE.value() or None)
    return get_client(sync_client=True, httpx_settings={"verify": ctx})


STATUS = {
    StateType.SCHEDULED: WorkflowStatus.PENDING,
    StateType.PENDING: WorkflowStatus.PENDING,
    StateType.PAUSED: WorkflowStatus.RUNNING,
    StateType.RUNNING: WorkflowStatus.RUNNING,
    StateType.COMPLETED: WorkflowStatus.COMPLETED,
    StateType.FAILED: WorkflowStatus.FAILED,
    StateType.CRASHED: WorkflowStatus.FAILED,
    StateType.CANCELLING: WorkflowStatus.CANCELLING,
    StateType.CANCELLED: WorkflowStatus.CANCELLED,
}

STAGE_STATUS = {
    StateType.SCHEDULED: StageStatus.PENDING,
    StateType.PENDING: StageStatus.PENDING,
    StateType.PAUSED: StageStatus.RUNNING,
    StateType.RUNNING: StageStatus.RUNNING,
    StateType.COMPLETED: StageStatus.COMPLETED,
    StateType.FAILED: StageStatus.FAILED,
    StateType.CRASHED: StageStatus.FAILED,
    StateType.CANCELLING: StageStatus.CANCELLED,
    StateType.CANCELLED: StageStatus.CANCELLED,
}


def online_workers(pool: str) -> int:
    """How many workers of `pool` have sent a heartbeat recently."""
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus

    with prefect_client() as client:
        try:
            return len(client.read_workers_for_work_pool(
                pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))))
        except ObjectNotFound:
            return 0
        except PrefectHTTPStatusError as exc:  # this client call answers a missing pool with a bare 404
            if exc.response.status_code == 404:
                return 0
            raise


def pool_queue(pool: str, history: int = 20) -> tuple[int, float | None]:
    """How many flow runs wait in `pool` (scheduled or pending), and the mean run time in seconds of its
    last `history` completed runs (None without one)."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    in_pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
    with prefect_client() as client:
        waiting = client.count_flow_runs(work_pool_filter=in_pool, flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING]))))
        done = client.read_flow_runs(work_pool_filter=in_pool, sort=FlowRunSort.END_TIME_DESC, limit=history,
                                     flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                                         type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))))
    times = [r.total_run_time.total_seconds() for r in done if r.total_run_time]
    return waiting, (sum(times) / len(times) if times else None)


def run_seconds(flow_run_id: str) -> float | None:
    """The run's measured run time (Prefect's total_run_time), None before it ran."""
    with prefect_client() as client:
        run = client.read_flow_run(UUID(flow_run_id))
    return run.total_run_time.total_seconds() if run.total_run_time else None


def pick_pool(pools: tuple[str, ...]) -> tuple[str, str | None]:
    """The first pool with an online worker (the last pool when none has one, so runs wait there),
    with a note when it is not the preferred one."""
    chosen = next((pool for pool in pools if online_workers(pool)), pools[-1])
    if chosen == pools[0]:
        return chosen, None
    return chosen, f"no worker is online in the {pools[0]!r} work pool: running on the {chosen!r} pool instead"


def choose_deployment(wt: WorkflowType) -> tuple[str, str | None]:
    """The deployment to run `wt` on (see `pick_pool`), with the fallback note if any."""
    if not wt.pools:
        return wt.deployment, None
    pool, note = pick_pool(wt.pools)
    return wt.deployment_on(pool), note


def ensure_work_pool(name: str, pool_type: str, description: str) -> bool:
    """Create the work pool unless it exists; True when it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with prefect_client() as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, description=description))
        except ObjectAlreadyExists:
            return False
    return True


def copy_deployment(template: str, pool: str, description: str) -> str:
    """`<flow>/<pool>`: the template deployment's flow, entrypoint and pull steps on `pool` (created or
    updated: Prefect upserts a deployment by flow and name); returns its id."""
    with prefect_client() as client:
        found = client.read_deployment_by_name(template)
        return str(client.create_deployment(
            flow_id=found.flow_id, name=pool, work_pool_name=pool, entrypoint=found.entrypoint, path=found.path,
            pull_steps=found.pull_steps, tags=[*found.tags, pool], parameter_openapi_schema=found.parameter_openapi_schema,
            description=description))


def remove_work_pool(name: str) -> None:
    """Delete the pool's deployments, then the pool (nothing when it does not exist)."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    with prefect_client() as client:
        for deployment in client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[name]))):
            client.delete_deployment(deployment.id)
        try:
            client.delete_work_pool(name)
        except ObjectNotFound:
            pass


def trigger(wt: WorkflowType, workflow_id: str, spec: dict[str, Any], *, run_number: int,
            cache_version: int, owner_id: str, pool: str | None = None, note: str | None = None) -> str:
    """Create the flow run of `wt`'s deployment (on `pool` when given, else on the preferred pool with a
    worker); `note` (why not the preferred pool) or the fallback is written to the run's logs; the
    idempotency key makes double triggers one run."""
    deployment, fallback = (wt.deployment_on(pool), note) if pool else choose_deployment(wt)
    flow_run: FlowRun = run_deployment(
        name=deployment,
        parameters={"spec": spec, "workflow_id": workflow_id, "cache_version": cache_version, "owner_id": owner_id},
        timeout=0,
        idempotency_key=f"weft:{workflow_id}:{run_number}",
        tags=["weft", wt.name],
        as_subflow=False,
    )
    if fallback:
        log_to_run(str(flow_run.id), logging.WARNING, fallback)
    return str(flow_run.id)


def start_run(deployment: str, parameters: dict[str, Any], key: str, tags: list[str]) -> str:
    """Create a flow run of a deployment that is not a step workflow (a replica, the endpoint controller);
    `key` makes a repeated call the same run."""
    flow_run: FlowRun = run_deployment(name=deployment, parameters=parameters, timeout=0, idempotency_key=key,
                                       tags=["weft", *tags], as_subflow=False)
    return str(flow_run.id)


def active_runs(deployment: str) -> list[str]:
    """Ids of the deployment's runs that are scheduled, pending or running."""
    with prefect_client() as client:
        found = client.read_deployment_by_name(deployment)
        flow_runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]))))
    return [str(r.id) for r in flow_runs]


def log_to_run(flow_run_id: str, level: int, message: str, name: str = "weft.api") -> None:
    """Add a line to a run's logs on the Prefect server."""

    from prefect.client.schemas.actions import LogCreate

    with prefect_client() as client:
        client.create_logs([LogCreate(name=name, level=level, message=message, timestamp=utcnow(),
                                      flow_run_id=UUID(flow_run_id))])


def status_of(flow_run: FlowRun) -> tuple[str, str | None]:
    state = flow_run.state
    if state is None:
        return WorkflowStatus.PENDING, None
    status = STATUS[state.type]
    reason = state.message if status in statuses.RETRYABLE else None
    return status, reason


def run_statuses(flow_run_ids: list[str], client: Any = None) -> dict[str, tuple[str, str | None]]:
    """Status and reason of several flow runs in one call (with `client`, an open sync Prefect client)."""
    if not flow_run_ids:
        return {}
    with nullcontext(client) if client is not None else prefect_client() as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in flow_run_ids])))
    return {str(r.id): status_of(r) for r in runs}


def run_view(wt: WorkflowType, flow_run_id: str) -> RunView:
    """The run's status, failure reason and one status per flow stage (from its task runs)."""
    with prefect_client() as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    status, reason = status_of(flow_run)
    latest: dict[str, Any] = {}
    for tr in sorted(task_runs, key=lambda t: t.expected_start_time or t.created):
        latest[tr.name.rsplit("-", 1)[0]] = tr
    stages = []
    for stage in wt.stages:
        tr = latest.get(stage.id)
        if tr is None or tr.state is None:
            stage_status = StageStatus.NOT_RUN if status in TERMINAL else StageStatus.PENDING
        elif tr.state.name == "Cached":
            stage_status = StageStatus.CACHED
        else:
            stage_status = STAGE_STATUS[tr.state.type]
        if stage_status == StageStatus.FAILED and tr.state.message and status == WorkflowStatus.FAILED:
            reason = f"{stage.title} failed: {tr.state.message}"
        stages.append(StageView(id=stage.id, title=stage.title, status=stage_status))
    return RunView(status=status, reason=reason, stages=stages)


def cancel(flow_run_id: str) -> str:
    """Ask Prefect to cancel the run (the worker kills its process); returns the new status."""
    with prefect_client() as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
        if flow_run.state and flow_run.state.type in (StateType.SCHEDULED, StateType.PENDING):
            new_state = Cancelled(message="Cancelled through the weft API before it started")
        else:
            new_state = Cancelling(message="Cancelled through the weft API")
        client.set_flow_run_state(flow_run.id, new_state, force=True)
        return status_of(client.read_flow_run(flow_run.id))[0]


def wait_terminal(flow_run_id: str, timeout: float = 60.0, poll: float = 0.5) -> str:
    """Poll until the run is finished (or the timeout passes); returns the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = run_statuses([flow_run_id])[flow_run_id][0]
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(poll)
