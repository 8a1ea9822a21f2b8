"""Measured training speeds: remembered so the same command settles the same model, bounded in time
so measuring never eats a budget, and stopped early past the bound."""
import json
import time

import torch

from rnnlab import plan as plan_mod
from rnnlab import precision, ratebook, recipes, speed
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.ratebook import RateBook


class NoisyRates:
    """A machine whose speed changes from one measurement to the next (x1.0, x1.5, x0.7, ...): a model
    sized on fresh measurements alone would drift. Records what was measured."""

    def __init__(self, factors=(1.0, 1.5, 0.7, 1.3, 0.8), flops=6e9, sleep=0.0):
        self.factors, self.flops, self.sleep, self.calls = factors, flops, sleep, []

    def __call__(self, cand, tcfg, device, rows=None, seconds=0.0, clock=None, precisions=("fp32",), deadline=None):
        time.sleep(self.sleep)
        f = self.factors[len(self.calls) % len(self.factors)]
        self.calls.append((cand.hidden_size, precisions, seconds, deadline))
        n = cand.parameter_count()
        return {p: f * self.flops / (6 * n) for p in precisions}, n


def _settle(monkeypatch, rates, budget=141.0, **run):
    monkeypatch.setattr(plan_mod, "step_rates", rates)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    rcfg = RunConfig(recipe="default", budget=budget, **run)
    return plan_mod.settle(DataConfig(dataset="timemachine"), ModelConfig(), TrainConfig(), rcfg, {"budget"},
                           torch.device("cpu"))


def test_the_same_command_settles_the_same_model_on_a_noisy_machine(monkeypatch):
    rates = NoisyRates()
    first = _settle(monkeypatch, rates)
    measured = len(rates.calls)
    assert measured >= 2 and "remembered" not in first.lines[2]
    for _ in range(4):  # four more runs of the same command: nothing measured, the same plan
        again = _settle(monkeypatch, rates)
        assert (again.model, again.train) == (first.model, first.train)
        assert "remembered from this machine's measurement" in again.lines[2] and "--remeasure" in again.lines[2]
    assert len(rates.calls) == measured
    assert again.rates.to_dict()["remembered_from"] > 0


def test_remeasure_measures_again_and_replaces_what_was_remembered(monkeypatch):
    rates = NoisyRates(factors=(1.0, 1.0, 1.0, 1.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0))
    slow = _settle(monkeypatch, rates)
    n = len(rates.calls)
    fast = _settle(monkeypatch, rates, remeasure=True)
    assert len(rates.calls) > n and fast.model.hidden_size > slow.model.hidden_size
    assert "remembered" not in fast.lines[2]
    assert _settle(monkeypatch, rates).model == fast.model  # the new rates are the ones remembered


def test_a_rate_is_remembered_for_what_it_depends_on_only(tmp_path):
    cpu, base, t = torch.device("cpu"), ModelConfig(model="lstm", hidden_size=64, vocab_size=30), TrainConfig()
    k = ratebook.key(base, t, cpu, 16, "fp32")
    assert ratebook.key(ModelConfig(model="lstm", hidden_size=64, vocab_size=30, dropout=0.3), t, cpu, 16, "fp32") == k
    different = [ratebook.key(ModelConfig(model="lstm", hidden_size=96, vocab_size=30), t, cpu, 16, "fp32"),
                 ratebook.key(ModelConfig(model="gru", hidden_size=64, vocab_size=30), t, cpu, 16, "fp32"),
                 ratebook.key(ModelConfig(model="lstm", hidden_size=64, vocab_size=31), t, cpu, 16, "fp32"),
                 ratebook.key(base, TrainConfig(num_steps=64), cpu, 16, "fp32"),
                 ratebook.key(base, TrainConfig(optimizer="adam"), cpu, 16, "fp32"),
                 ratebook.key(base, t, cpu, 8, "fp32"), ratebook.key(base, t, cpu, 16, "bf16")]
    assert len({k, *different}) == 1 + len(different)


def test_the_book_round_trips_forgets_old_rates_and_survives_a_damaged_file(tmp_path):
    now = [1_000_000.0]
    book = RateBook(tmp_path / "speed.json", clock=lambda: now[0])
    assert book.get("a") is None
    book.put({"a": 1234.56, "b": 99.0})
    assert book.get("a") == (1234.6, 1_000_000.0) and book.get("b")[0] == 99.0
    now[0] += ratebook.MAX_AGE_DAYS * 86400 + 1
    assert book.get("a") is None  # a month old: measured again
    (tmp_path / "speed.json").write_text("{not json")
    assert book.get("a") is None and (tmp_path / "speed.json.bad").exists()
    book.put({"c": 5.0})
    assert json.loads((tmp_path / "speed.json").read_text())["c"]["tokens_per_s"] == 5.0
    (tmp_path / "speed.json").write_text(json.dumps({"d": {"tokens_per_s": -3, "at": now[0]}, "e": "junk"}))
    assert book.get("d") is None and book.get("e") is None  # nonsense is never trusted
    readonly = RateBook(tmp_path / "file" / "speed.json")
    (tmp_path / "file").write_text("a file where the folder should be")
    readonly.put({"x": 1.0})  # cannot be written: only costs the next run a measurement


def test_measuring_stops_at_its_share_of_the_budget(monkeypatch):
    """A busy machine measures slowly: past the allowance the search stops, the widths not measured
    count as too large, and the log says so (it once spent a whole 15 s budget measuring)."""
    monkeypatch.setattr(recipes, "MEASURE_FLOOR", 0.5)
    rates = NoisyRates(factors=(1.0,), flops=6e12, sleep=0.3)  # fast enough for the largest width
    plan = _settle(monkeypatch, rates, budget=15.0, remeasure=True)
    assert len(rates.calls) == 2 and plan.rates.skipped, rates.calls  # 0.6 s >= 0.5 s: the third is not measured
    assert "measuring stopped at its allowance of 0.5 s" in plan.lines[2]
    assert all(s <= 0.5 / 8 + 1e-9 and d is not None for _, _, s, d in rates.calls)  # per candidate: a share
    assert recipes.measuring_allowance(141.0) == max(recipes.MEASURE_FLOOR, 0.03 * 141.0)
    assert recipes.measuring_allowance(0.0) == float("inf")  # --epochs runs size without measuring


def test_step_rates_takes_one_step_per_precision_once_past_the_deadline():
    m = ModelConfig(model="lstm", hidden_size=16, embedding_dim=8, vocab_size=20, impl="fast")
    t = TrainConfig(batch_size=2, num_steps=4)
    ticks = iter(range(10_000))
    clock = lambda: float(next(ticks))  # noqa: E731  every reading is one second later
    rates, n = speed.step_rates(m, t, torch.device("cpu"), seconds=1e6, clock=clock, precisions=("fp32",),
                                deadline=0.0)
    assert rates["fp32"] > 0 and n == m.parameter_count()
    ticks = iter(range(10_000))
    speed.step_rates(m, t, torch.device("cpu"), seconds=1e6, clock=clock, precisions=("fp32",))
    used = next(ticks)  # no deadline: at least MIN_STEPS timed steps (two readings each, and the checks)
    assert used > 2 * speed.MIN_STEPS
