"""Time budgets, evaluation points, early stopping and the best weights."""
from guards import HANG_GUARD
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from fakeclock import StepClock
from rnnlab.config import ModelConfig, RunConfig, TrainConfig, parse_duration
from rnnlab.errors import UsageError
from rnnlab.models import build_model
from rnnlab.schedule import ANNEAL
from rnnlab.training import Trainer


def _ids(n=3000, period="abcdefghijk"):
    return torch.tensor([i % len(period) + 1 for i in range(n)])


def _model(hidden=16):
    torch.manual_seed(0)
    return build_model(ModelConfig(model="gru", impl="fast", vocab_size=13, hidden_size=hidden, embedding_dim=8))


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("45", 45),
                                           ("0.5h", 1800), ("1m30s", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "", "m", "10m5", "-5m"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError, match="write it like 90s, 10m, 2h"):
        parse_duration(text)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", f"--budget={text}"], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    assert r.returncode == 2 and "write it like 90s" in r.stderr and "Traceback" not in r.stderr


def test_the_cosine_schedule_spans_the_budget_not_the_epochs():
    cfg = TrainConfig(batch_size=4, num_steps=8, optimizer="adam", lr=0.01, min_lr=0.001, lr_schedule="cosine",
                      warmup_steps=5)
    tr = Trainer(_model(), cfg, _ids(), run=RunConfig(epochs=10_000, budget=100.0))
    assert tr.schedule.lr_at(2, 0.0) == pytest.approx(0.01 * 3 / 5)  # warm-up by steps
    assert tr.schedule.lr_at(50, 0.0) == pytest.approx(0.01)
    assert tr.schedule.lr_at(50, 50.0) == pytest.approx(0.001 + 0.009 * 0.5)
    assert tr.schedule.lr_at(50, 100.0) == pytest.approx(0.001) and tr.schedule.lr_at(50, 150.0) == pytest.approx(0.001)
    assert tr.timing.limit == 100.0
    assert Trainer(_model(), cfg, _ids(), run=RunConfig(budget=100.0, max_seconds=30.0)).timing.limit == 30.0


def test_a_budget_stops_training_and_evaluation_time_counts_in_it():
    """On a clock that advances 1 ms per read (about 2 ms a step): 624 steps an epoch, evaluation
    points every 0.5 s inside the first epoch, the budget of 1.5 s spent in the second; the same on
    any host."""
    cfg = TrainConfig(batch_size=4, num_steps=8, optimizer="adam", lr=0.01)
    tr = Trainer(_model(16), cfg, _ids(20000), _ids(3000), run=RunConfig(epochs=10_000, budget=1.5, eval_every=0.5),
                 clock=StepClock(0.001))
    hist = tr.fit()
    assert tr.time_up and 1.5 <= tr.timing.elapsed < 1.5 + 0.01  # stopped at the first step past the budget
    assert tr.batches_per_epoch < tr.step < 2 * tr.batches_per_epoch  # in the second epoch
    points = [h for h in hist if not isinstance(h["epoch"], int)]
    assert len(points) == 2 and all("val_loss" in h for h in points)  # evaluations inside epochs
    assert [h["elapsed_s"] for h in points] == pytest.approx([0.5, 1.0], abs=0.01)
    assert all(b["step"] > a["step"] for a, b in zip(hist, hist[1:]))
    assert hist[-1]["elapsed_s"] >= 1.5


def test_the_time_of_evaluations_counts_as_training_time(monkeypatch):
    """Each evaluation takes 0.25 s of a fake clock that otherwise advances 1 ms a read (two reads a
    step, one at the start of an epoch): the record's ``elapsed_s`` holds it, the next epoch goes on from there."""
    import rnnlab.evalpoints as evalpoints

    clock, real = StepClock(0.001), evalpoints.evaluate

    def slow(*a, **k):
        clock.t += 0.25
        return real(*a, **k)

    monkeypatch.setattr(evalpoints, "evaluate", slow)
    tr = Trainer(_model(), TrainConfig(batch_size=4, num_steps=8), _ids(), _ids(300), run=RunConfig(epochs=2),
                 clock=clock)
    hist = tr.fit()
    first = 2 * tr.batches_per_epoch * 0.001 + 0.25 + 0.001  # the steps, the evaluation, the read after it
    assert [h["elapsed_s"] for h in hist] == pytest.approx([first, 2 * first], abs=1e-9)
    assert tr.timing.elapsed == hist[-1]["elapsed_s"]


def test_evaluations_score_a_bounded_slice():
    calls = []
    import rnnlab.evalpoints as evalpoints

    real = evalpoints.evaluate

    def spy(model, ids, *a, **k):
        calls.append(len(ids))
        return real(model, ids, *a, **k)

    evalpoints.evaluate = spy
    try:
        Trainer(_model(), TrainConfig(batch_size=4, num_steps=8), _ids(), _ids(5000),
                run=RunConfig(epochs=2, eval_tokens=300)).fit()
    finally:
        evalpoints.evaluate = real
    assert calls == [301, 301]


def test_early_stopping_and_the_best_weights_restored(monkeypatch):
    """Validation losses that improve twice, then not: training stops after ``patience``
    evaluations without improvement and ends with the weights of the best one."""
    import rnnlab.evalpoints as evalpoints

    losses = iter([3.0, 2.0, 1.5, 1.6, 1.5, 1.7] + [9.0] * 100)
    monkeypatch.setattr(evalpoints, "evaluate", lambda *a, **k: {"loss": next(losses), "ppl": 1.0, "bpc": 1.0})
    cfg = TrainConfig(batch_size=4, num_steps=8, optimizer="adam", lr=0.01)
    model = _model()
    seen = []

    def remember(trainer, m):
        seen.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    tr = Trainer(model, cfg, _ids(), _ids(1000), run=RunConfig(epochs=50, patience=3, restore_best=True),
                 callbacks=[remember])
    hist = tr.fit()
    assert tr.early_stopped and [h["val_loss"] for h in hist] == [3.0, 2.0, 1.5, 1.6, 1.5, 1.7]
    assert tr.schedule.best == 1.5 and tr.schedule.evals_since_best == 3
    assert all(torch.equal(model.state_dict()[k], v) for k, v in seen[2].items())  # the first 1.5
    assert not all(torch.equal(seen[2][k], v) for k, v in seen[-1].items())


def test_early_stopping_through_the_cli_keeps_best_and_final_alike(tmp_path):
    text = "the cat sat on the mat. " * 200
    (tmp_path / "t.txt").write_text(text)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(tmp_path / "t.txt"), "--model", "gru",
                        "--hidden-size", "32", "--embedding-dim", "8", "--optimizer", "adam", "--lr", "0.02",
                        "--val-fraction", "0.1", "--epochs", "200", "--patience", "3", "--restore-best",
                        "--batch-size", "8", "--num-steps", "16", "--out", str(tmp_path / "run"), "--quiet",
                        "--predict-every", "0"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    assert "early stop" in r.stdout and "best selection weights restored" in r.stdout
    final, best = load_file(str(tmp_path / "run" / "model.safetensors")), load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert math.isfinite(float(r.stdout.split("test loss ")[1].split()[0]))


def test_a_plateau_under_a_budget_starts_the_final_decay_before_stopping(monkeypatch):
    """Under a time budget with a cosine schedule, the first plateau restores the best weights and
    decays the rate from where it is to min_lr over ANNEAL of the budget; the end of the decay stops."""
    import rnnlab.evalpoints as evalpoints

    losses = iter([3.0, 2.0, 2.5, 2.6] + [9.0] * 100_000)
    monkeypatch.setattr(evalpoints, "evaluate", lambda *a, **k: {"loss": next(losses), "ppl": 1.0, "bpc": 1.0})
    cfg = TrainConfig(batch_size=4, num_steps=8, optimizer="adam", lr=0.01, min_lr=1e-4, lr_schedule="cosine")
    model = _model()
    seen = []

    def remember(trainer, m):
        seen.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    budget = 3.0
    tr = Trainer(model, cfg, _ids(), _ids(1000), run=RunConfig(epochs=100_000, budget=budget, patience=2,
                                                               restore_best=True), callbacks=[remember],
                 clock=StepClock(0.001))  # 93 steps an epoch: about 0.19 s of this clock, on any host
    hist = tr.fit()
    assert tr.early_stopped and [h["val_loss"] for h in hist][:4] == [3.0, 2.0, 2.5, 2.6]
    start, lr0 = tr.schedule.anneal
    assert start == pytest.approx(hist[3]["elapsed_s"]) and lr0 > 0.005  # still high, early in the budget
    assert start + ANNEAL * budget <= tr.timing.elapsed < budget  # the decay ran to its end, then stopped
    assert tr.schedule.lr_at(tr.step, start + ANNEAL * budget) == pytest.approx(1e-4)
    assert tr.schedule.lr_at(tr.step, start + ANNEAL * budget / 2) == pytest.approx((lr0 + 1e-4) / 2, rel=1e-3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in seen[1].items())  # ends with the best (2.0)
    _, meta = tr.state_dict()
    again = Trainer(_model(), cfg, _ids(), _ids(1000), run=RunConfig(epochs=50, budget=budget, patience=2))
    again.load_state_dict(*tr.state_dict())
    assert again.schedule.anneal == tr.schedule.anneal and meta["anneal"] == [start, lr0]
