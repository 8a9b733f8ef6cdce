"""The endpoint controller: one long-running run per `weft up`; the copy holding the lease reconciles
every endpoint every few seconds (weft/serving/controller.py), the others wait passively."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows import names
from weft.ids import new_id
from weft.serving.controller import Controller
from weft.settings import get_settings
from weft.specs.names import WorkflowName


@flow(name=WorkflowName.ENDPOINT_CONTROLLER.value, log_prints=True, flow_run_name=names.run_name(lambda: "every endpoint"))
def endpoint_controller(passes: int | None = None) -> int:
    """Take or renew the lease → reconcile every endpoint → sleep; forever, or `passes` times. Returns the
    number of passes it made as the holder."""
    log = get_run_logger()
    controller = Controller(holder=str(flow_run.id or new_id()))
    interval = get_settings().controller_interval_seconds
    holding, made, n = False, 0, 0
    try:
        while passes is None or n < passes:
            n += 1
            try:
                if controller.acquire():
                    if not holding:
                        log.info("holding the controller lease: reconciling every %g s", interval)
                    holding = True
                    for event in controller.run_once():
                        log.info(event)
                    made += 1
                elif holding or n == 1:
                    log.info("another controller holds the lease: waiting")
                    holding = False
            except Exception as exc:  # the database or Prefect is away: try again next pass
                log.warning("controller pass failed: %s", exc, exc_info=not isinstance(exc, OSError))
            time.sleep(interval)
    finally:
        try:
            controller.release()
        except Exception:  # the lease lapses by itself
            pass
    return made
