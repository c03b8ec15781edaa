"""The move's throttle decisions (issue 21): batch size from the last batch's duration, and
when to wait at a batch boundary."""

from __future__ import annotations

import pytest

from provision.errors import MoveFailed
from provision.move.throttle import (
    CANCELLED,
    PAUSED,
    Cancelled,
    Gate,
    Limits,
    Signals,
    next_batch_size,
    pause_reason,
)

LIMITS = Limits(target_s=0.5, min_rows=1_000, max_rows=200_000)


def test_a_batch_faster_than_the_target_grows_the_next_and_a_slower_one_shrinks_it():
    assert next_batch_size(10_000, 0.4, 10_000, LIMITS) == 12_500
    assert next_batch_size(10_000, 0.625, 10_000, LIMITS) == 8_000


def test_one_batch_changes_the_size_by_at_most_twice_either_way():
    assert next_batch_size(10_000, 0.001, 10_000, LIMITS) == 20_000
    assert next_batch_size(10_000, 30.0, 10_000, LIMITS) == 5_000


def test_the_size_stays_within_its_bounds():
    assert next_batch_size(150_000, 0.1, 150_000, LIMITS) == 200_000
    assert next_batch_size(1_500, 5.0, 1_500, LIMITS) == 1_000


def test_the_last_short_batch_and_a_fixed_size_change_nothing():
    assert next_batch_size(10_000, 0.01, 300, LIMITS) == 10_000  # the source ran out
    assert next_batch_size(10_000, 0.01, 10_000, Limits(target_s=None)) == 10_000


def test_nothing_observed_means_go_on():
    assert pause_reason(Signals(), None, LIMITS) is None
    assert pause_reason(Signals(replica_lag_s=99.0), None, LIMITS) is None  # lag not watched


def test_each_signal_pauses_and_says_why():
    waiting = Signals(waiters=("pid 7 (nucleus, billing)",))
    assert "pid 7 (nucleus, billing)" in (pause_reason(waiting, None, LIMITS) or "")
    vacuum = pause_reason(Signals(vacuum="vacuum: scanning heap"), None, LIMITS)
    assert vacuum is not None and "autovacuum" in vacuum and "scanning heap" in vacuum
    lagging = Limits(max_replica_lag_s=2.0)
    assert pause_reason(Signals(replica_lag_s=2.0), None, lagging) is None
    assert "3.5 s" in (pause_reason(Signals(replica_lag_s=3.5), None, lagging) or "")


def test_an_operators_pause_is_a_reason_and_says_how_to_resume():
    assert "move resume" in (pause_reason(Signals(), PAUSED, LIMITS) or "")


class Clock:
    """Time that passes only when the gate sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def gate(observed: list[tuple[Signals, str | None]], limits: Limits = LIMITS):
    said: list[str] = []
    clock = Clock()
    readings = iter(observed)
    return (
        Gate(limits, 5_000, lambda: next(readings), said.append, clock.sleep, clock),
        said,
    )


def test_the_gate_waits_while_a_reason_holds_says_it_once_and_says_when_it_resumes():
    waiting = Signals(waiters=("pid 7 (nucleus, psql)",))
    g, said = gate([(waiting, None), (waiting, None), (Signals(), PAUSED), (Signals(), None)])
    g.boundary("entities")
    assert said == [
        "entities: paused: sessions wait on a lock the move holds: pid 7 (nucleus, psql)",
        "entities: paused: paused by `move pause` (run `nucleus-provision move resume NAME` to go on)",
        "entities: resumed",
    ]


def test_the_gate_stops_at_a_cancel():
    g, _ = gate([(Signals(), PAUSED), (Signals(), CANCELLED)])
    with pytest.raises(Cancelled):
        g.boundary("entities")


def test_a_signal_holds_the_move_a_bounded_time_but_an_operators_pause_does_not():
    vacuum = (Signals(vacuum="vacuum: scanning heap"), None)
    g, _ = gate([vacuum] * 10, Limits(max_pause_s=2.0))
    with pytest.raises(MoveFailed, match="autovacuum"):
        g.boundary("entities")
    g, said = gate([(Signals(), PAUSED)] * 50 + [(Signals(), None)], Limits(max_pause_s=2.0))
    g.boundary("entities")
    assert said[-1] == "entities: resumed"


def test_the_gate_sizes_the_next_batch():
    g, _ = gate([])
    g.batch_done(0.25, 5_000)
    assert g.size == 10_000
