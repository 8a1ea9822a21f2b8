"""The run's clock (``rnnlab.timing.RunClock``) on a fake clock: the time limit, spans of training
across resumes, the simulated step time, the setup counted in a budget, when evaluations and
snapshots are due. No wall clock."""
import math

import pytest

from fakeclock import StepClock
from rnnlab.config import RunConfig
from rnnlab.timing import RunClock, due_after


class Reading:
    """A clock that says what it is told."""

    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def test_the_time_limit_is_the_budget_or_max_seconds_the_sooner():
    assert RunClock(RunConfig(budget=100.0)).limit == 100.0
    assert RunClock(RunConfig(budget=100.0, max_seconds=30.0)).limit == 30.0
    assert RunClock(RunConfig(max_seconds=40.0)).limit == 40.0
    free = RunClock(RunConfig())
    free.elapsed = 1e9
    assert free.limit == 0.0 and not free.spent  # no limit: never spent


def test_spans_of_training_add_up_and_the_limit_is_reached_at_it():
    wall = Reading(1000.0)
    t = RunClock(RunConfig(budget=10.0), clock=wall)
    t.start()
    wall.t = 1004.0
    assert t.tick(step=7) == 4.0 and not t.spent
    wall.t = 1006.5
    assert t.tick(step=8, now=1005.0) == 5.0  # a reading taken earlier is used as it is
    t.start()  # the next epoch, e.g. after an evaluation's time has been counted
    wall.t = 1011.0
    assert t.tick(step=9) == pytest.approx(9.5) and not t.spent
    wall.t = 1011.5
    assert t.tick(step=10) == pytest.approx(10.0) and t.spent


def test_every_read_of_a_step_clock_is_one_tick():
    t = RunClock(RunConfig(), clock=StepClock(0.5))
    t.start()  # reads 0.5
    assert t.tick(1) == 0.5  # reads 1.0
    assert t.clock() == 1.5 and t.tick(2) == 1.5  # reads 2.0: 1.5 after the start


def test_the_simulated_clock_counts_steps_only():
    wall = Reading(50.0)
    t = RunClock(RunConfig(budget=1.0), step_seconds=0.05, clock=wall)
    t.count_setup(0.3)
    assert t.elapsed == 0.3
    t.start()
    wall.t = 9999.0  # the wall clock does not matter
    assert t.tick(step=10) == pytest.approx(0.3 + 10 * 0.05)
    assert t.tick(step=14, now=123.0) == pytest.approx(1.0) and t.spent


def test_the_setup_moves_the_first_evaluation_and_snapshot():
    t = RunClock(RunConfig(eval_every=2.0, save_seconds=5.0))
    assert (t.next_eval, t.next_snapshot) == (2.0, 5.0)
    t.count_setup(1.5)
    assert (t.elapsed, t.setup_seconds, t.next_eval, t.next_snapshot) == (1.5, 1.5, 3.5, 6.5)


def test_evaluations_and_snapshots_fall_due_on_their_cadence():
    wall = Reading(0.0)
    t = RunClock(RunConfig(eval_every=2.0, save_seconds=3.0), clock=wall)
    t.start()
    seen = []
    for step in range(1, 13):
        wall.t = step * 0.5
        t.tick(step)
        if t.eval_due:
            seen.append(("eval", t.elapsed))
            t.evaluated()
        if t.snapshot_due:
            seen.append(("snapshot", t.elapsed))
            t.snapshotted()
    assert seen == [("eval", 2.0), ("snapshot", 3.0), ("eval", 4.0), ("eval", 6.0), ("snapshot", 6.0)]


def test_without_a_cadence_nothing_falls_due():
    t = RunClock(RunConfig(eval_every=0.0, save_seconds=0.0))
    t.elapsed = 1e9
    assert t.next_eval == math.inf and not t.eval_due and not t.snapshot_due
    t.evaluated()
    t.snapshotted()
    assert t.next_eval == t.next_snapshot == math.inf
    assert due_after(3.0, 0.0) == math.inf and due_after(3.0, 2.0) == 5.0


def test_a_resumed_clock_continues_where_it_stopped():
    wall = Reading(500.0)
    t = RunClock(RunConfig(budget=20.0, eval_every=4.0, save_seconds=3.0), clock=wall)
    t.resume(elapsed=7.0, next_eval=8.0, setup_seconds=0.5)
    assert (t.elapsed, t.next_eval, t.setup_seconds, t.next_snapshot) == (7.0, 8.0, 0.5, 10.0)
    t.start()
    wall.t = 501.5
    assert t.tick(step=100) == 8.5 and t.eval_due and not t.snapshot_due
