"""Prefect automations weft relies on: crash detection for flow runs whose process died unannounced.

A flow-run process killed with its worker (SIGKILL, a lost machine) reports nothing, so its run
would stay RUNNING forever. Flow runs emit `prefect.flow-run.heartbeat` events every
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (`weft up` sets it on its workers); this proactive
trigger marks a run Crashed when no event of it follows a heartbeat within the window (Prefect's
documented "zombie flow" automation), which lets a retry pick the run up on another worker.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

CRASH_DETECTION = "weft: crash flow runs without heartbeats"


def crash_detection(within_seconds: float) -> Automation:
    """The automation: after a heartbeat, expect any event of the same flow run within the window."""
    return Automation(
        name=CRASH_DETECTION,
        description="Marks a flow run Crashed when its heartbeats stop (its process died with its worker).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {within_seconds:.0f} s: the flow run's process is gone")],
    )


def ensure_crash_detection(within_seconds: float) -> None:
    """Create the automation, or update it to this window (idempotent across `weft up` restarts)."""
    wanted = crash_detection(within_seconds)
    try:
        existing = Automation.read(name=CRASH_DETECTION)
    except ValueError:
        wanted.create()
        return
    wanted.id = existing.id
    wanted.update()
