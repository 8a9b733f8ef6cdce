"""The canary verdict of a retrained revision: its error rate and latency against the revisions that had the
traffic before it, read from the gateway's inference records (`measure`) and compared by a pure function
(`judge`) into promote, roll back, extend or wait.

The rules, in order:
- a canary with at least `min_requests` requests whose 5xx share exceeds the baseline's by more than
  `max_error_increase` is rolled back at once, window over or not (errors are a clear failure);
- until the window is over, wait;
- with enough requests: roll back when its median latency exceeds the baseline's by more than
  `max_latency_ratio` (compared only when the baseline has `min_requests` served requests as well, since
  early requests are slower while replicas warm up, latency is judged only at the window's end); else promote;
- with too few requests: extend the window once; after the extension, roll back if its error share
  still exceeds the baseline's by more than the margin, else promote.

Why too little traffic ends in a promotion: the retrained model passed the offline promotion gate already,
and a quiet endpoint gives no serving evidence either way. Rolling back would discard an evaluated model
for lack of traffic, and holding the split open keeps two revisions' replicas running indefinitely. A
canary that failed requests is still rolled back, whatever the count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from weft.settings import RetrainPolicy
from weft.tables import InferenceRecord


@dataclass(frozen=True)
class Stats:
    """Requests of one or more revisions in a window: how many, how many failed (status >= 500), and the
    median latency of those that did not fail."""

    requests: int
    errors: int
    p50_ms: float | None

    @property
    def served(self) -> int:
        return self.requests - self.errors

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": round(self.error_rate, 4)}


@dataclass(frozen=True)
class Limits:
    min_requests: int = 30
    max_error_increase: float = 0.02
    max_latency_ratio: float = 1.25

    @classmethod
    def of(cls, policy: RetrainPolicy) -> Limits:
        return cls(policy.canary_min_requests, policy.canary_max_error_increase, policy.canary_max_latency_ratio)


class Action(StrEnum):
    WAIT = "wait"
    EXTEND = "extend"
    PROMOTE = "promote"
    ROLL_BACK = "roll back"


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str


def _pct(rate: float) -> str:
    return f"{rate:.1%}"


def _errors_breach(canary: Stats, baseline: Stats, limits: Limits) -> str | None:
    """Why the canary's error share is too high, or None."""
    if canary.errors and canary.error_rate > baseline.error_rate + limits.max_error_increase:
        return (f"{canary.errors} of {canary.requests} canary requests failed ({_pct(canary.error_rate)}) against "
                f"{_pct(baseline.error_rate)} of {baseline.requests} on the current revisions (allowed: "
                f"+{limits.max_error_increase:.1%})")
    return None


def judge(canary: Stats, baseline: Stats, limits: Limits, *, window_over: bool, extended: bool) -> Verdict:
    """The verdict on the canary now (the rules are in the module's docstring)."""
    enough = canary.requests >= limits.min_requests
    if enough and (why := _errors_breach(canary, baseline, limits)):
        return Verdict(Action.ROLL_BACK, why)
    if not window_over:
        return Verdict(Action.WAIT, f"{canary.requests} canary requests so far; the window is still open")
    summary = (f"{canary.requests} canary requests, {_pct(canary.error_rate)} failed (current revisions: "
               f"{_pct(baseline.error_rate)} of {baseline.requests})")
    if not enough:
        if not extended:
            return Verdict(Action.EXTEND, f"only {canary.requests} canary requests (fewer than "
                                          f"{limits.min_requests}): the window is extended once")
        if why := _errors_breach(canary, baseline, limits):
            return Verdict(Action.ROLL_BACK, f"too few requests to judge latency, and {why}")
        return Verdict(Action.PROMOTE, f"{summary}; fewer than {limits.min_requests} requests after the extended "
                                       "window and none failed beyond the margin: the evaluated model is promoted")
    if baseline.served < limits.min_requests or canary.p50_ms is None or baseline.p50_ms is None:
        return Verdict(Action.PROMOTE, f"{summary}; latency not compared (the current revisions served "
                                       f"{baseline.served} requests, fewer than {limits.min_requests})")
    ratio = canary.p50_ms / baseline.p50_ms if baseline.p50_ms > 0 else 1.0
    latency = (f"median latency {canary.p50_ms:.0f} ms against {baseline.p50_ms:.0f} ms (x{ratio:.2f}, allowed "
               f"x{limits.max_latency_ratio:g})")
    if ratio > limits.max_latency_ratio:
        return Verdict(Action.ROLL_BACK, f"{summary}; too slow: {latency}")
    return Verdict(Action.PROMOTE, f"{summary}; {latency}")


def measure(session: Session, revision_ids: list[str], since: datetime, until: datetime) -> Stats:
    """The gateway's records of these revisions in [since, until): counts in SQL, and the median latency
    of the served requests read at its offset (no rows are loaded into memory)."""
    window = (col(InferenceRecord.revision_id).in_(revision_ids), col(InferenceRecord.created_at) >= since,
              col(InferenceRecord.created_at) < until)
    failed = InferenceRecord.status_code >= 500
    requests, errors = session.exec(select(func.count(), func.coalesce(func.sum(case((failed, 1), else_=0)), 0))
                                    .where(*window)).one()
    served = requests - errors
    p50 = None
    if served:
        middle = session.exec(select(InferenceRecord.latency_ms).where(*window, InferenceRecord.status_code < 500)
                              .order_by(col(InferenceRecord.latency_ms))
                              .offset((served - 1) // 2).limit(2 - served % 2)).all()
        p50 = sum(middle) / len(middle)
    return Stats(requests=requests, errors=errors, p50_ms=p50)


def rescaled(split: dict[str, int]) -> dict[str, int]:
    """`split` scaled to sum to 100 in proportion (largest remainders get the rounding): the traffic the
    revisions had before the canary, given back on a rollback."""
    total = sum(split.values())
    if total <= 0:
        raise ValueError(f"no revision in {split} had traffic: nothing to give the traffic back to")
    exact = {v: p * 100 / total for v, p in split.items()}
    out = {v: int(x) for v, x in exact.items()}
    for v in sorted(exact, key=lambda v: exact[v] - out[v], reverse=True)[:100 - sum(out.values())]:
        out[v] += 1
    return out
