"""The learning-rate schedule and its plateau -> final decay decisions, without a model: values
computed by hand at the boundaries."""
import json
import math

import pytest

from rnnlab.config import RunConfig, TrainConfig
from rnnlab.schedule import ANNEAL, Schedule, cosine_lr, warmup_lr


def test_warmup_is_linear_to_the_rate_then_constant():
    s = Schedule(lr=0.1, warmup_steps=4)
    assert [s.lr_at(i, 0.0) for i in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert warmup_lr(0.1, 0, 4) == pytest.approx(0.025)


def test_cosine_over_the_steps_starts_after_the_warmup_and_stays_at_min_lr():
    s = Schedule(lr=1.0, min_lr=0.0, kind="cosine", total_steps=10)
    assert s.lr_at(0, 0.0) == 1.0 and s.lr_at(5, 0.0) == pytest.approx(0.5) and s.lr_at(10, 0.0) == pytest.approx(0.0)
    assert s.lr_at(20, 0.0) == pytest.approx(0.0)  # past the end: min_lr
    w = Schedule(lr=1.0, min_lr=0.2, kind="cosine", warmup_steps=2, total_steps=12)
    assert w.lr_at(1, 0.0) == pytest.approx(1.0)  # the warm-up's last step
    assert w.lr_at(2, 0.0) == pytest.approx(1.0)  # progress 0 of the 10 steps after it
    assert w.lr_at(7, 0.0) == pytest.approx(0.6)  # half way: 0.2 + 0.8 / 2
    assert w.lr_at(12, 0.0) == pytest.approx(0.2)


def test_cosine_over_a_budget_follows_the_seconds_not_the_steps():
    s = Schedule(lr=0.01, min_lr=0.001, kind="cosine", budget=100.0, total_steps=10)
    assert s.lr_at(50, 0.0) == pytest.approx(0.01)
    assert s.lr_at(3, 50.0) == pytest.approx(0.0055) and s.lr_at(50, 50.0) == pytest.approx(0.0055)
    assert s.lr_at(50, 25.0) == pytest.approx(0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.lr_at(50, 100.0) == pytest.approx(0.001) and s.lr_at(50, 150.0) == pytest.approx(0.001)
    assert cosine_lr(2.0, 1.0, -1.0) == 2.0  # before the start: the start


def test_of_reads_the_configs():
    s = Schedule.of(TrainConfig(lr=0.5, min_lr=0.1, lr_schedule="cosine", warmup_steps=3),
                    RunConfig(epochs=4, budget=60.0, patience=2), steps_per_epoch=25, label="select")
    assert (s.lr, s.min_lr, s.kind, s.warmup_steps, s.budget, s.total_steps, s.patience, s.label) == \
        (0.5, 0.1, "cosine", 3, 60.0, 100, 2, "select")


def test_patience_without_a_budget_stops_early():
    s = Schedule(lr=0.1, patience=2)
    assert not s.record(3.0, 10, 1.0, has_best=True) and s.improved and s.best == 3.0
    assert not s.record(2.0, 20, 2.0, has_best=True) and s.improved
    assert not s.record(2.5, 30, 3.0, has_best=True) and not s.improved and not s.stopped
    assert not s.record(2.0, 40, 4.0, has_best=True) and not s.improved  # equal is no better
    assert s.stopped == "early stop: 2 evaluations without a better val loss" and s.evals_since_best == 2
    assert s.best == 2.0


def test_no_loss_scored_decides_nothing():
    s = Schedule(lr=0.1, patience=1)
    for _ in range(3):
        assert not s.record(None, 1, 1.0, has_best=False)
    assert not s.improved and not s.stopped and s.evals_since_best == 0 and s.best == math.inf


def test_a_plateau_under_a_budget_starts_the_final_decay_which_then_stops_the_run():
    s = Schedule(lr=0.01, min_lr=0.0001, kind="cosine", budget=100.0, patience=2)
    s.record(2.0, 10, 10.0, has_best=True)
    assert not s.record(2.1, 20, 20.0, has_best=True)
    lr0 = s.lr_at(30, 30.0)
    assert s.record(2.2, 30, 30.0, has_best=True)  # the plateau: restore the best weights now
    assert s.anneal == (30.0, lr0) and s.evals_since_best == 0 and not s.stopped
    assert s.lr_at(31, 30.0) == pytest.approx(lr0)
    assert s.lr_at(40, 30.0 + ANNEAL * 100 / 2) == pytest.approx((lr0 + 0.0001) / 2)
    assert s.lr_at(50, 30.0 + ANNEAL * 100) == pytest.approx(0.0001)
    assert not s.record(2.3, 35, 35.0, has_best=True) and not s.record(2.3, 36, 36.0, has_best=True)
    assert not s.stopped  # a plateau during the decay changes nothing: the decay runs to its end
    s.record(1.0, 40, 39.9, has_best=True)
    assert not s.stopped and s.improved
    s.record(1.5, 41, 40.0, has_best=True)  # 30 + ANNEAL x 100: the decay is over
    assert s.stopped == "the final decay after the plateau is done"


@pytest.mark.parametrize("why, kwargs, elapsed, has_best", [
    ("too late in the budget for a decay", dict(kind="cosine", budget=100.0), 90.0, True),
    ("no best weights to restore", dict(kind="cosine", budget=100.0), 30.0, False),
    ("a constant rate has no decay", dict(kind="constant", budget=100.0), 30.0, True),
    ("no budget", dict(kind="cosine", total_steps=100), 30.0, True),
])
def test_a_plateau_stops_the_run_when_no_final_decay_can_start(why, kwargs, elapsed, has_best):
    s = Schedule(lr=0.01, patience=1, **kwargs)
    s.record(2.0, 1, elapsed - 1, has_best)
    assert not s.record(2.0, 2, elapsed, has_best), why
    assert s.anneal is None and s.stopped.startswith("early stop: 1 evaluations")


def test_the_state_round_trips_through_json():
    s = Schedule(lr=0.01, min_lr=0.0001, kind="cosine", budget=100.0, patience=1, label="select")
    s.record(2.0, 10, 10.0, has_best=True)
    s.record(2.5, 20, 20.0, has_best=True)
    s.record(2.6, 30, 25.0, has_best=True)
    state = json.loads(json.dumps(s.state_dict()))
    again = Schedule(lr=0.01, min_lr=0.0001, kind="cosine", budget=100.0, patience=1, label="select")
    again.load_state_dict(state)
    assert (again.best, again.evals_since_best, again.anneal, again.stopped) == \
        (s.best, s.evals_since_best, s.anneal, s.stopped)
    assert again.anneal == (20.0, s.anneal[1]) and again.lr_at(30, 25.0) == s.lr_at(30, 25.0)
    s.record(2.7, 40, 30.0, has_best=True)
    again.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert again.stopped == s.stopped == "the final decay after the plateau is done"
    old = Schedule(lr=0.01)
    old.load_state_dict({"best_val": 1.5})  # a trainer state from before rnnlab 0.2
    assert (old.best, old.evals_since_best, old.anneal, old.stopped) == (1.5, 0, None, "")
