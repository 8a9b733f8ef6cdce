"""weft's process worker for its own pools (`cpu`, `gpu`, `cpu-light`): Prefect's `ProcessWorker` that
starts runs sooner.

A Prefect 3.9 process worker starts every flow run in two fresh interpreters: a workspace supervisor
(`import prefect`, pull steps) that execs `python -m prefect.engine` (`import prefect` again, then the
flow module), and it finds new runs by polling every PREFECT_WORKER_QUERY_SECONDS. On a 2-core machine
that is most of the 7-10 s between a trigger and RUNNING. This worker keeps everything else of
`ProcessWorker` (Pending/Submitting proposals, cancellation, crash detection, concurrency limits, one
process per flow run, killed on cancel, its exit code read as usual) and changes three things:

- It polls the moment the events websocket reports a run of its pool as Scheduled (tens of ms), so it
  can poll rarely otherwise (the polling loop stays the source of truth when events are late).
- A run starts as one interpreter, `python -m prefect.engine` (Prefect's EngineCommandStarter; the
  engine runs the deployment's pull steps itself), not a supervisor that execs the engine.
- With `--warm N` (the `cpu-light` pool: onboarding, cloud models, scans), N processes are started
  ahead of time (`--child`) that have imported Prefect's engine and the light flows' modules and
  wait on stdin. A run hands one the environment `python -m prefect.engine` would get; the child
  runs that very module (`runpy`), so the engine, the pull steps and the flow loading are Prefect's
  own, and a new warm child starts as soon as one is taken.

Never a stale or wrongly configured run: a run whose environment differs from the warm children's
(a deployment with `env` job variables) starts cold, and a child whose project modules changed on
disk since it started execs `python -m prefect.engine` (same PID). A deployment with an explicit
`command` job variable runs exactly as Prefect's ProcessWorker runs it.

Run: `python -m deployments.worker --pool cpu-light --warm 1` (with the platform's environment:
PREFECT_API_URL, WEFT_*, WEFT_PROJECT_DIR; `weft worker --pool P` does this). It lives in
`deployments/` because its warm processes import flows.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.flows import load_flow_from_flow_run
from prefect.logging import get_logger
from prefect.runner._flow_run_executor import FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.runner._starter_engine import EngineCommandStarter
from prefect.settings import get_current_settings
from prefect.utilities.processutils import sanitize_subprocess_env
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from weft import pools

PROJECT_DIR = Path(__file__).resolve().parent.parent
LIGHT_FLOW_MODULES = ("flows.add_local_model", "flows.add_cloud_model", "flows.model_security_scan")
# What a run would otherwise load on its way to RUNNING: the pull-step machinery, result storage, the
# ORM's mapper configuration (done on the first query). `module:function` calls the function.
WARM_UP = ("prefect.deployments.steps", "prefect.deployments.steps.core", "prefect.events.clients",
           "prefect.filesystems", "prefect.results", "prefect.utilities.visualization",
           "sqlalchemy.orm:configure_mappers", "deployments.worker:warm_database")
CHILD_FLAG = "--child"
# A warm child starts with SIGINT ending it quietly (the platform stops the worker with a SIGINT to its
# process group, warm children included); once a run is handed over, the engine's handling applies.
CHILD_BOOTSTRAP = ("import os, signal; signal.signal(signal.SIGINT, lambda *_: os._exit(0)); "
                   "from deployments.worker import main; main()")
RUN_ENV_PREFIX = "PREFECT__"  # per-run variables (flow run id, control channel, attribution), never settings


# --- the warm child ------------------------------------------------------------------------------


def _project_modules_changed(since: float) -> list[str]:
    """Project modules (flows, tasks, weft...) this process imported whose file changed after `since`."""
    changed = []
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not file.startswith(str(PROJECT_DIR)) or "site-packages" in file:
            continue
        try:
            if os.stat(file).st_mtime > since:
                changed.append(module.__name__)
        except OSError:
            changed.append(module.__name__)
    return changed


def warm_database() -> None:
    """Open weft's database connection now (it stays in the engine's pool for the run's first query)."""
    from weft.db import get_engine

    try:
        with get_engine().connect():
            pass
    except Exception:  # noqa: BLE001  (only a head start: the run connects, and reports, on its own)
        pass


def _cold_start(env: dict[str, str], reason: str) -> None:
    """Become `python -m prefect.engine` (same PID, so the worker's handle stays valid)."""
    print(f"weft worker: cold start of flow run {env.get('PREFECT__FLOW_RUN_ID')}: {reason}", file=sys.stderr,
          flush=True)
    os.execve(sys.executable, [sys.executable, "-m", "prefect.engine"], env)


def child_main(argv: list[str]) -> int:
    """`--child SPAWNED_AT MODULE...`: import the engine and the modules, wait for one order on stdin
    (the run's environment and working directory), then run that flow run as `python -m prefect.engine`."""
    spawned_at, preload = float(argv[0]), argv[1:]
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))  # idle: see CHILD_BOOTSTRAP
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    preload_error = None
    try:
        import prefect.engine  # noqa: F401  (what `python -m prefect.engine` imports)
        import prefect.flow_engine  # noqa: F401

        for name in preload:
            module, _, function = name.partition(":")
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
    except Exception as exc:  # a broken preload must not break runs: they start cold instead
        preload_error = f"preloading failed: {type(exc).__name__}: {exc}"

    line = sys.stdin.readline()
    if not line:  # the worker closed our stdin without an order: it is stopping
        return 0
    order = json.loads(line)
    env: dict[str, str] = order["env"]
    os.chdir(order["cwd"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if preload_error:
        _cold_start(env, preload_error)
    if changed := _project_modules_changed(spawned_at):
        _cold_start(env, f"project modules changed since the warm process started ({', '.join(changed[:5])})")

    # The worker checked that everything but the per-run PREFECT__* variables is what we started with.
    os.environ.update({k: v for k, v in env.items() if k.startswith(RUN_ENV_PREFIX)})
    sys.argv = ["prefect.engine"]  # the engine reads the flow run id from argv[1], else from the environment
    # runpy warns that prefect.engine is imported already (we imported it on purpose)
    warnings.filterwarnings("ignore", message="'prefect.engine' found in sys.modules", category=RuntimeWarning)
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # the engine exits with its own code on abort, pause and errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


# --- the worker ------------------------------------------------------------------------------------

log = get_logger("weft.worker")


def engine_env(job_env: dict[str, str | None], extra: dict[str, str | None]) -> dict[str, str]:
    """The environment Prefect's `EngineCommandStarter` gives `python -m prefect.engine` (same order)."""
    env: dict[str, str | None] = dict(os.environ)
    env.update(job_env)
    env.update(get_current_settings().to_environment_variables(exclude_unset=True))
    env.update(extra)
    return sanitize_subprocess_env(env)


def without_run_variables(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(RUN_ENV_PREFIX)}


@dataclass
class WarmChild:
    process: anyio.abc.Process
    env: dict[str, str]  # what it was started with (no per-run variables)

    async def discard(self) -> None:
        with contextlib.suppress(Exception):
            await self.process.stdin.aclose()  # an idle child reads EOF and exits
        with anyio.move_on_after(5):
            await self.process.wait()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


class WarmPool:
    """Warm children, oldest first. Taking one starts its replacement `refill_delay` seconds later (so
    its imports do not compete with the run just handed over for its first steps)."""

    def __init__(self, size: int, preload: list[str], refill_delay: float = 1.0) -> None:
        self.size, self.preload, self.refill_delay = size, preload, refill_delay
        self.children: deque[WarmChild] = deque()
        self._group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> WarmPool:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        await self._fill()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
        while self.children:
            await self.children.popleft().discard()

    async def _fill(self) -> None:
        while len(self.children) < self.size and self._group is not None:
            env = without_run_variables(engine_env(dict(os.environ), {}))
            command = [sys.executable, "-c", CHILD_BOOTSTRAP, CHILD_FLAG, repr(time.time()), *self.preload]
            process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=None, stderr=None,
                                               cwd=str(PROJECT_DIR), env=env)
            self.children.append(WarmChild(process, env))

    async def _refill(self) -> None:
        await anyio.sleep(self.refill_delay)
        await self._fill()

    def take(self, run_env: dict[str, str]) -> WarmChild | None:
        """The oldest live child (maybe still importing: even so it is ahead of a cold start), if it was
        started with the run's environment (per-run PREFECT__* variables aside); else None."""
        while self.children and self.children[0].process.returncode is not None:
            self.children.popleft()
        if not self.children:
            return None
        wanted = without_run_variables(run_env)
        if self.children[0].env != wanted:
            differ = sorted(k for k in wanted.keys() | self.children[0].env.keys()
                            if wanted.get(k) != self.children[0].env.get(k))
            log.info("flow run %s starts cold: its environment differs from the warm processes' (%s)",
                     run_env.get("PREFECT__FLOW_RUN_ID"), ", ".join(differ[:8]))
            return None
        child = self.children.popleft()
        if self._group is not None:
            self._group.start_soon(self._refill)
        return child


class WarmStarter:
    """A ProcessStarter (see prefect.runner._flow_run_executor) that hands the run to a warm child; a
    cold `python -m prefect.engine` (Prefect's EngineCommandStarter) when none fits or the hand-over
    fails."""

    def __init__(self, pool: WarmPool, configuration: ProcessJobConfiguration, cwd: Path,
                 control_channel: Any) -> None:
        self.pool, self.configuration, self.cwd, self.control_channel = pool, configuration, cwd, control_channel

    def cold(self) -> EngineCommandStarter:
        return EngineCommandStarter(cwd=self.cwd, env=self.configuration.env,
                                    stream_output=self.configuration.stream_output,
                                    control_channel=self.control_channel)

    async def start(self, flow_run: Any,
                    task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED) -> None:
        run_env = {
            "PREFECT__FLOW_RUN_ID": str(flow_run.id),
            "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
            "PREFECT__DEPLOYMENT_NAME": self.configuration.env.get("PREFECT__DEPLOYMENT_NAME"),
        }
        child = self.pool.take(engine_env(self.configuration.env, run_env))
        if child is None:
            return await self.cold().start(flow_run, task_status=task_status)
        registered = False
        if self.control_channel is not None:
            try:
                port, token = self.control_channel.register(flow_run.id)
                run_env |= {"PREFECT__CONTROL_PORT": str(port), "PREFECT__CONTROL_TOKEN": token}
                registered = True
            except RuntimeError:  # the channel is disabled: kill-only cancellation, as in Prefect
                pass
        order = {"env": engine_env(self.configuration.env, run_env), "cwd": str(self.cwd)}
        try:
            await child.process.stdin.send(json.dumps(order).encode() + b"\n")
            await child.process.stdin.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            if registered:
                self.control_channel.unregister(flow_run.id)
            await child.discard()
            return await self.cold().start(flow_run, task_status=task_status)
        log.info("flow run %s handed to warm process %s", flow_run.id, child.process.pid)
        task_status.started(ProcessHandle(child.process))
        await child.process.wait()


with warnings.catch_warnings():  # ProcessWorker's dispatch key: in this process, it is one
    warnings.simplefilter("ignore")

    class WarmProcessWorker(ProcessWorker):
        """A process worker woken by events whose runs start as one interpreter, warm where it has warm
        children (see the module's docstring)."""

        type = "process"  # a process pool: `prefect worker start --type process` can serve it too
        _description = "Starts each flow run in a process of its own, pre-imported where it can."

        def __init__(self, *args: Any, warm: int = 1, preload: list[str] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.warm_pool = WarmPool(warm, list(LIGHT_FLOW_MODULES + WARM_UP if preload is None else preload))

        async def setup(self) -> None:
            await super().setup()
            await self._exit_stack.enter_async_context(self.warm_pool)  # idle children end before the runs
            group = await self._exit_stack.enter_async_context(anyio.create_task_group())
            self._exit_stack.callback(group.cancel_scope.cancel)  # LIFO: cancelled, then left
            group.start_soon(self._poll_when_scheduled)

        async def _poll_when_scheduled(self) -> None:
            """Poll as soon as the server says a flow run of this pool was scheduled (the events
            websocket delivers that in tens of ms) instead of up to a poll interval later. The polling
            loop stays as it is: it is the source of truth when events are late or the socket is down."""
            names = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Scheduled"]))
            while True:
                try:
                    async with get_events_subscriber(filter=names) as subscriber:
                        async for event in subscriber:
                            pool = self._work_pool
                            if self.is_setup and pool is not None and any(
                                    r.id == f"prefect.work-pool.{pool.id}" for r in event.related):
                                await self.get_and_submit_flow_runs()
                except Exception as exc:  # noqa: BLE001  (never let the shortcut take the worker down)
                    log.debug("scheduled-run events unavailable (%s); polling only, retrying in 10 s", exc)
                await anyio.sleep(10)

        async def run(self, flow_run: Any, configuration: ProcessJobConfiguration,
                      task_status: anyio.abc.TaskStatus[int] | None = None) -> ProcessWorkerResult:
            """ProcessWorker.run with the WarmStarter (an explicit `command` job variable: Prefect's way)."""
            if configuration._command_configured:
                return await super().run(flow_run, configuration, task_status)
            task_status = task_status or anyio.TASK_STATUS_IGNORED
            execution = None
            working = (tempfile.TemporaryDirectory(suffix="prefect") if not configuration.working_dir
                       else contextlib.nullcontext(configuration.working_dir))
            with working as working_dir:
                async with FlowRunExecutorContext() as ctx:
                    starter = WarmStarter(self.warm_pool, configuration, Path(working_dir).resolve(),
                                          ctx.control_channel)
                    executor = ctx.create_executor(flow_run, starter, resolve_flow=load_flow_from_flow_run,
                                                   propose_submitting=False)

                    async def execute(*, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED
                                      ) -> None:
                        nonlocal execution
                        execution = await executor.submit(task_status=task_status)

                    async with anyio.create_task_group() as group:
                        handle = await group.start(execute)
                        if handle.pid is None:
                            raise RuntimeError("Flow run process has no PID")
                        task_status.started(handle.pid)
            if execution is None or execution.status_code is None:
                raise RuntimeError("Failed to start flow run process.")
            return ProcessWorkerResult(status_code=execution.status_code, identifier=str(execution.handle.pid))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        sys.exit(child_main(argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m deployments.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--pool", default=pools.LIGHT, help="work pool to serve (default %(default)s)")
    parser.add_argument("--name", default=None, help="the worker's name in Prefect")
    parser.add_argument("--warm", type=int, default=0, help="warm processes kept ready (default %(default)s)")
    parser.add_argument("--preload", nargs="*", default=list(LIGHT_FLOW_MODULES + WARM_UP),
                        help="modules a warm process imports, `module:function` to call one too "
                             "(default: the light flows and what their runs load before RUNNING)")
    parser.add_argument("--query-seconds", type=float, default=None,
                        help="poll interval (default PREFECT_WORKER_QUERY_SECONDS)")
    args = parser.parse_args(argv)

    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings
    from prefect.utilities.processutils import setup_signal_handlers_worker

    os.environ.setdefault("WEFT_PROJECT_DIR", str(PROJECT_DIR))  # prefect.yaml's pull step
    overrides = {PREFECT_WORKER_QUERY_SECONDS: args.query_seconds} if args.query_seconds else {}
    worker = WarmProcessWorker(work_pool_name=args.pool, name=args.name, warm=max(0, args.warm), preload=args.preload)
    setup_signal_handlers_worker(os.getpid(), f"the {args.pool} worker", print)  # as `prefect worker start`
    with temporary_settings(overrides), contextlib.suppress(KeyboardInterrupt):
        anyio.run(worker.start)


if __name__ == "__main__":
    main()
