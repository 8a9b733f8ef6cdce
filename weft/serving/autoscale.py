"""The autoscaler: how many replicas a revision wants, Knative-style. The load is the average number of
requests in flight over a window, measured from the gateway's request records (by Little's law: the
seconds of request time inside the window over the window's length), so every API process's requests
count. Scale up as soon as the short panic window's load needs more replicas than run; scale down only
when the stable window's load needs fewer and nothing scaled for a stable window (no flapping); with
`min_instances: 0`, an idle stable window scales to zero and a waiting request (the gateway's demand
mark) brings one replica back: a cold start. A request still waiting (a demand mark within the panic
window) keeps at least one replica wanted, so a cold start that outlasts the stable window completes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, select

from weft.clock import as_utc
from weft.tables import InferenceRecord


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str | None  # None: no change
    cold_start: bool = False


def load(session: Session, revision_id: str, window: float, now: datetime) -> float:
    """Average requests in flight on the revision over the last `window` seconds."""
    start = now - timedelta(seconds=window)
    rows = session.exec(select(InferenceRecord.created_at, InferenceRecord.latency_ms).where(
        InferenceRecord.revision_id == revision_id, InferenceRecord.created_at >= start))
    busy = 0.0
    for end, latency_ms in rows:
        end_s = (as_utc(end) - start).total_seconds()
        busy += min(latency_ms / 1000, end_s)
    return busy / window


def decide(current: int, low: int, high: int, target: int, panic_load: float, stable_load: float,
           since_scaled: float, stable_window: float, panic_window: float, demand: bool,
           waiting: bool = False) -> Decision:
    """Replicas wanted now. `current` is the revision's present desired count, `since_scaled` the seconds
    since it last changed, `demand` whether a request waited for a replica since then, `waiting` whether
    one waits now (no scale to zero under it)."""
    target = max(1, target)
    if current < low:
        return Decision(low, f"below min_instances {low}")
    if current > high:
        return Decision(high, f"above max_instances {high}")
    if current == 0:
        if demand:
            return Decision(1, "a request is waiting on an endpoint scaled to zero", cold_start=True)
        return Decision(0, None)
    up = min(high, math.ceil(panic_load / target))
    if up > current:
        return Decision(up, f"{panic_load:.2f} requests in flight over {panic_window:g} s, target {target} "
                            f"per replica")
    down = max(low, int(waiting), math.ceil(stable_load / target))
    if down < current and since_scaled >= stable_window:
        what = "idle" if stable_load == 0 else f"{stable_load:.2f} requests in flight"
        return Decision(down, f"{what} over {stable_window:g} s, target {target} per replica")
    return Decision(current, None)
