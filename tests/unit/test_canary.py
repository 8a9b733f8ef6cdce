"""The retrain canary's verdict (weft/monitoring/canary.py): the pure comparison, the measurement of
inference records and the traffic given back on a rollback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, SQLModel, create_engine

from weft.monitoring.canary import Action, Limits, Stats, judge, measure, rescaled
from weft.settings import RetrainPolicy
from weft.tables import InferenceRecord

LIMITS = Limits(min_requests=30, max_error_increase=0.02, max_latency_ratio=1.25)
BASELINE = Stats(requests=400, errors=4, p50_ms=100.0)


def verdict(canary: Stats, baseline: Stats = BASELINE, *, over: bool = True, extended: bool = False):
    return judge(canary, baseline, LIMITS, window_over=over, extended=extended)


def test_good_canary_waits_for_the_window_then_is_promoted():
    good = Stats(requests=50, errors=0, p50_ms=110.0)
    assert verdict(good, over=False).action == Action.WAIT
    v = verdict(good)
    assert v.action == Action.PROMOTE and "x1.10" in v.reason and "0.0% failed" in v.reason


def test_errors_roll_back_at_once_even_while_the_window_is_open():
    failing = Stats(requests=40, errors=6, p50_ms=90.0)
    v = verdict(failing, over=False)
    assert v.action == Action.ROLL_BACK and "6 of 40" in v.reason and "15.0%" in v.reason
    # within the margin over the baseline's own error share: no rollback
    assert verdict(Stats(requests=100, errors=3, p50_ms=100.0)).action == Action.PROMOTE


def test_slower_latency_rolls_back_at_the_end_of_the_window_only():
    slow = Stats(requests=60, errors=0, p50_ms=300.0)
    assert verdict(slow, over=False).action == Action.WAIT  # warm-up can be slow: latency waits for the end
    v = verdict(slow)
    assert v.action == Action.ROLL_BACK and "too slow" in v.reason and "x3.00" in v.reason


def test_latency_is_not_compared_against_a_quiet_baseline():
    v = verdict(Stats(requests=40, errors=0, p50_ms=900.0), Stats(requests=5, errors=0, p50_ms=100.0))
    assert v.action == Action.PROMOTE and "latency not compared" in v.reason


def test_too_few_requests_extend_once_then_promote_unless_they_failed():
    few = Stats(requests=4, errors=0, p50_ms=100.0)
    assert verdict(few, over=False).action == Action.WAIT
    assert verdict(few).action == Action.EXTEND
    assert verdict(few, extended=True).action == Action.PROMOTE
    assert verdict(Stats(requests=0, errors=0, p50_ms=None), extended=True).action == Action.PROMOTE
    v = verdict(Stats(requests=4, errors=1, p50_ms=100.0), extended=True)
    assert v.action == Action.ROLL_BACK and "1 of 4" in v.reason
    # a few errors never roll back early: below min_requests the verdict waits for the window
    assert verdict(Stats(requests=4, errors=4, p50_ms=None), over=False).action == Action.WAIT


def test_limits_come_from_the_policy():
    policy = RetrainPolicy(canary_min_requests=5, canary_max_error_increase=0.1, canary_max_latency_ratio=2.0)
    assert Limits.of(policy) == Limits(5, 0.1, 2.0)


def test_rescaled_gives_the_canary_share_back_in_proportion():
    assert rescaled({"v1": 90}) == {"v1": 100}
    assert rescaled({"v1": 45, "v2": 45}) == {"v1": 50, "v2": 50}
    assert sum(rescaled({"v1": 30, "v2": 30, "v3": 30}).values()) == 100
    with pytest.raises(ValueError, match="nothing to give the traffic back to"):
        rescaled({"v1": 0})


def test_measure_counts_failures_and_takes_the_median_of_served_requests():
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine, tables=[InferenceRecord.__table__])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(200, 100.0), (200, 300.0), (200, 200.0), (200, 400.0), (503, 5.0), (404, 50.0)]
    with Session(engine) as s:
        for i, (code, latency) in enumerate(rows):
            s.add(InferenceRecord(revision_id="rev", route="/v1/completions", status_code=code, latency_ms=latency,
                                  created_at=start + timedelta(seconds=i)))
        s.add(InferenceRecord(revision_id="other", route="/v1/completions", status_code=500, latency_ms=1.0,
                              created_at=start))
        s.add(InferenceRecord(revision_id="rev", route="/v1/completions", status_code=500, latency_ms=1.0,
                              created_at=start + timedelta(hours=1)))  # after the window
        s.commit()
        stats = measure(s, ["rev"], start, start + timedelta(minutes=5))
        assert stats == Stats(requests=6, errors=1, p50_ms=200.0)  # median of 50, 100, 200, 300, 400
        odd = measure(s, ["rev"], start, start + timedelta(seconds=3))
        assert odd == Stats(requests=3, errors=0, p50_ms=200.0)
        assert measure(s, ["none"], start, start + timedelta(minutes=5)) == Stats(0, 0, None)
        assert measure(s, ["rev", "other"], start, start + timedelta(minutes=5)).errors == 2
