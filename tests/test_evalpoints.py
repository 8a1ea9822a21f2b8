"""What an evaluation does (``rnnlab.evalpoints.EvalPoints``): score a bounded slice of the held-out
text, let the schedule decide, keep the best weights and bring them back. The scores are given
(``evaluate`` replaced), the weights changed by hand between evaluations."""
import pytest
import torch

import rnnlab.evalpoints as evalpoints
from rnnlab.config import ModelConfig, RunConfig, TrainConfig
from rnnlab.evalpoints import EvalPoints
from rnnlab.models import build_model
from rnnlab.schedule import Schedule

CFG = TrainConfig(batch_size=2, num_steps=4, lr=0.01, min_lr=0.001, lr_schedule="cosine")


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(model="gru", vocab_size=7, hidden_size=4, embedding_dim=3))


def _points(monkeypatch, losses, run, ids=torch.arange(50) % 7):
    scored = []
    it = iter(losses)

    def fake(model, ids, batch_size, num_steps):
        scored.append((len(ids), batch_size, num_steps, model.training))
        return {"loss": next(it), "ppl": 0.0, "bpc": 0.0}

    monkeypatch.setattr(evalpoints, "evaluate", fake)
    model = _model()
    return EvalPoints(model, ids, CFG, run, Schedule.of(CFG, run, 10, "select"), "select"), model, scored


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _set(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_scores_a_bounded_slice_into_the_labelled_metrics(monkeypatch):
    points, model, scored = _points(monkeypatch, [2.5], RunConfig(eval_tokens=20))
    model.eval()
    metrics = {"epoch": 1}
    assert points.score(metrics)
    assert metrics == {"epoch": 1, "select_loss": 2.5, "select_ppl": 0.0, "select_bpc": 0.0}
    assert scored == [(21, 2, 4, False)] and model.training  # 20 tokens + the last target; training mode again
    whole, _, scored = _points(monkeypatch, [1.0], RunConfig(eval_tokens=0))
    assert whole.score({}) and scored[0][0] == 50  # eval_tokens 0: all of it


def test_without_held_out_text_nothing_is_scored(monkeypatch):
    points, _, scored = _points(monkeypatch, [], RunConfig(), ids=None)
    metrics = {}
    assert not points.score(metrics) and metrics == {} and scored == []
    points.decide(metrics, step=3, elapsed=1.0)  # nothing scored: the schedule sees no loss
    assert points.schedule.best == float("inf") and points.best_state is None


def test_keeps_the_best_weights_and_brings_them_back(monkeypatch):
    points, model, _ = _points(monkeypatch, [3.0, 2.0, 2.5], RunConfig(restore_best=True))
    for i, value in enumerate([0.1, 0.2, 0.3]):
        _set(model, value)
        metrics = {}
        points.score(metrics)
        points.decide(metrics, step=i, elapsed=float(i))
    assert points.schedule.best == 2.0
    assert all(torch.all(v == 0.2) for v in points.best_state.values())
    points.restore_best()
    assert all(torch.all(p == 0.2) for p in model.parameters())


def test_keeps_no_weights_without_restore_best(monkeypatch):
    points, model, _ = _points(monkeypatch, [3.0, 2.0], RunConfig(restore_best=False))
    for value in (0.1, 0.2):
        _set(model, value)
        m = {}
        points.score(m)
        points.decide(m, step=0, elapsed=0.0)
    before = _weights(model)
    points.restore_best()
    assert points.best_state is None and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_final_decay_starts_from_the_best_weights(monkeypatch):
    """A plateau under a budget with a cosine schedule: the weights go back to the best evaluation's."""
    run = RunConfig(budget=100.0, patience=2, restore_best=True)
    points, model, _ = _points(monkeypatch, [2.0, 2.5, 2.6], run)
    for i, value in enumerate([0.1, 0.2, 0.3]):
        _set(model, value)
        m = {}
        points.score(m)
        points.decide(m, step=i, elapsed=10.0 * (i + 1))
    assert points.schedule.anneal is not None and points.schedule.anneal[0] == pytest.approx(30.0)
    assert all(torch.all(p == 0.1) for p in model.parameters())
