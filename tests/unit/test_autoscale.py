"""The autoscaler's decisions (weft/serving/autoscale.py) and the canary split of a new revision."""

from __future__ import annotations

from tasks.serving import canary_split
from weft.serving.autoscale import decide


def scale(current, low=1, high=3, panic=0.0, stable=0.0, since=0.0, demand=False, waiting=False):
    return decide(current, low, high, 1, panic, stable, since, 60.0, 6.0, demand, waiting)


def test_scales_up_on_the_panic_window_capped_at_max():
    assert scale(1, panic=6.0).replicas == 3
    assert scale(1, panic=2.0).replicas == 2
    assert scale(3, panic=6.0).reason is None


def test_scales_down_only_after_a_stable_window_without_change():
    assert scale(3, stable=0.5, since=30).reason is None  # too soon: no flapping
    assert scale(3, stable=0.5, since=61).replicas == 1
    assert scale(3, stable=2.0, since=61).replicas == 2


def test_scale_to_zero_and_cold_start():
    assert scale(1, low=0, stable=0.0, since=61).replicas == 0
    idle = scale(0, low=0)
    assert idle.replicas == 0 and idle.reason is None
    woken = scale(0, low=0, demand=True)
    assert woken.replicas == 1 and woken.cold_start
    # a request still waits (a cold start longer than the stable window, a long generation): keep its replica
    assert scale(1, low=0, stable=0.0, since=61, waiting=True).replicas == 1


def test_bounds_win():
    assert scale(5, high=3).replicas == 3
    assert scale(0, low=2).replicas == 2


def test_canary_split_keeps_the_rest_in_proportion():
    assert canary_split({}, "v2", 10) == {"v2": 100}
    assert canary_split({"v1": 100}, "v2", None) == {"v2": 100}
    assert canary_split({"v1": 100}, "v2", 10) == {"v1": 90, "v2": 10}
    split = canary_split({"v1": 50, "v2": 50}, "v3", 33)
    assert sum(split.values()) == 100 and split["v3"] == 33 and abs(split["v1"] - split["v2"]) <= 1
