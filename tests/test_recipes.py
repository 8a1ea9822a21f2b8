"""Recipes: `rnnlab train FILE` with no model or optimiser flags trains the default recipe; `--recipe
book` the book's settings; explicit flags always win; the first log line and `--help` say so."""
from guards import HANG_GUARD
import subprocess
import sys

import os

import pytest

from shipped import shipped_cells

from rnnlab import recipes
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.errors import UsageError

TEXT = "the recipe decides what the user did not. " * 200


def fixed_rates(flops_per_s=2e10, calls=None):
    """A machine whose training step runs at ``flops_per_s``: a step costs three forward passes of the
    candidate (its cell's own cost, ``ModelConfig.flops_per_token``)."""
    def rate_of(cand):
        if calls is not None:
            calls.append(cand.hidden_size)
        return flops_per_s / (3 * cand.flops_per_token()), cand.parameter_count()
    return rate_of


def _resolve(explicit=(), budget=None, tokens=1_000_000, vocab=65, rate_of=None, **given):
    m, t, r = ModelConfig(), TrainConfig(), RunConfig(recipe="default")
    for cfg in (m, t, r):
        for k, v in given.items():
            if hasattr(cfg, k):
                setattr(cfg, k, v)
    if budget is not None:
        r.budget = budget
    recipes.model_defaults("default", m, set(explicit) | set(given))
    plan = recipes.resolve("default", m, t, r, set(explicit) | set(given) | ({"budget"} if budget else set()),
                           tokens, vocab, rate_of=rate_of or fixed_rates())
    return m, t, r, plan


def test_the_default_recipe_fills_what_was_not_given():
    m, t, r, plan = _resolve(budget=141.0)
    assert (m.model, m.impl, m.embedding_dim) == ("lstm", "fast", 64)
    assert (t.optimizer, t.lr_schedule, t.batch_size, t.num_steps, t.warmup_steps) == ("adam", "cosine", 16, 64, 50)
    assert r.budget == 141.0 and r.restore_best and r.patience and r.eval_tokens and r.eval_every == 14.1
    assert "recipe default:" in plan.describe() and "hidden-size" in plan.describe()


def test_explicit_flags_win():
    m, t, r, plan = _resolve(budget=141.0, model="gru", hidden_size=99, lr=0.5, optimizer="sgd", dropout=0.4)
    assert (m.model, m.hidden_size, t.lr, t.optimizer, m.dropout) == ("gru", 99, 0.5, "sgd", 0.4)
    assert "hidden-size" not in plan.values and "lr" not in plan.values


def test_no_budget_means_the_default_budget_and_says_so():
    _, _, r, plan = _resolve()
    assert r.budget == recipes.DEFAULT_BUDGET and "no --budget given" in plan.describe()
    _, _, r, plan = _resolve(explicit={"epochs"}, epochs=3)
    assert r.budget == 0 and r.epochs == 3 and r.eval_every == 0  # an --epochs run: evaluations at epoch ends


def _size(budget, tokens, flops=2e10, model="lstm", calls=None):
    m = ModelConfig(model=model, impl="fast", vocab_size=65, embedding_dim=64)
    return recipes.size_for(m, fixed_rates(flops, calls), budget, 0, tokens)


def test_the_model_grows_with_the_budget_the_corpus_and_the_measured_speed():
    sizes = [_size(b, 1_000_000) for b in (60, 141, 300, 900, 3600)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    by_corpus = [_size(900, n) for n in (20_000, 200_000, 2_000_000, 20_000_000)]
    assert by_corpus == sorted(by_corpus) and by_corpus[0] < by_corpus[-1]
    assert _size(900, 10_000_000, flops=5e9) < _size(900, 10_000_000) < _size(900, 10_000_000, flops=2e11)


def test_the_size_rule_holds_against_the_measured_speed_and_measures_few_candidates():
    """The chosen width sees >= 8 tokens per parameter at its measured rate and the next one does
    not (or is capped by the corpus); a binary search gives the same answer as trying every width."""
    for budget, tokens, flops in ((141, 1_000_000, 2e10), (900, 170_000, 5e9), (30, 60_000, 1e11), (3600, 5e6, 3e10)):
        calls = []
        w = _size(budget, tokens, flops, calls=calls)
        rate_of = fixed_rates(flops)
        m = ModelConfig(model="lstm", impl="fast", vocab_size=65, embedding_dim=64)

        def fits(width):
            cand = recipes.candidate(m, width)
            rate, n = rate_of(cand)
            return (n <= recipes.MAX_PARAMS_PER_TOKEN * tokens
                    and recipes.tokens_seen(rate, budget, 0, tokens) >= recipes.TOKENS_PER_PARAMETER * n)

        linear = max([x for x in recipes.WIDTHS if fits(x)], default=recipes.WIDTHS[0])
        assert w == linear and len(calls) <= 4
        bigger = [x for x in recipes.WIDTHS if x > w]
        assert not bigger or not fits(bigger[0])


def test_the_same_measured_rates_give_the_same_plan():
    plans = [_resolve(budget=141.0, tokens=1_000_000, rate_of=fixed_rates(2e10))[3].values for _ in range(5)]
    assert all(p == plans[0] for p in plans)


def test_dropout_follows_the_passes_in_steps():
    drops = [recipes.dropout_for(p) for p in (1, 8, 9, 16, 40, 200, 5000)]
    assert drops == sorted(drops) and drops[0] == drops[1] == 0 and 0 < drops[2] and drops[-1] == recipes.MAX_DROPOUT
    assert all(abs(d / 0.05 - round(d / 0.05)) < 1e-9 for d in drops)
    m, _, _, plan = _resolve(budget=900.0, tokens=60_000, rate_of=fixed_rates(2e10))  # hundreds of passes
    assert m.dropout == recipes.MAX_DROPOUT and m.locked_dropout and m.weight_drop > 0


def test_the_recipe_adapts_to_the_cell_and_the_implementation_the_user_chose():
    """--impl concise/scratch: no DropConnect (the fast kernels run it); --model mingru/minlstm:
    sized by the recipe with an embedding as wide as the hidden state."""
    for impl in ("concise", "scratch"):
        m, _, _, _ = _resolve(budget=900.0, tokens=60_000, impl=impl)
        assert m.dropout > 0 and m.weight_drop == 0
        m.vocab_size = 65
        m.validate()
    from rnnlab.models.cells import get_cell

    for name in shipped_cells():
        m2, _, _, plan = _resolve(budget=141.0, tokens=500_000, model=name)
        assert m2.impl == ("fast" if "fast" in get_cell(name).impls else get_cell(name).impls[0])
        assert "hidden-size" in plan.describe()
        if get_cell(name).width_is_embedding:
            assert m2.embedding_dim == m2.hidden_size
        m2.vocab_size = 65
        m2.validate()


def test_cuda_runs_use_the_fused_library_kernels():
    m = ModelConfig(model="lstm")
    assert recipes.model_defaults("default", m, {"model"}, device="cuda") == ["impl"] and m.impl == "concise"
    m = ModelConfig(model="mingru", hidden_size=32, embedding_dim=32)
    recipes.model_defaults("default", m, {"model", "hidden_size", "embedding_dim"}, device="cuda")
    assert m.impl == "fast"  # no concise for mingru


def test_fine_tuning_keeps_the_architecture_and_a_gentler_rate():
    m, t, _, _ = _resolve(budget=60.0)
    m2, t2, r2 = ModelConfig(model="gru", hidden_size=77), TrainConfig(), RunConfig(recipe="default", budget=60.0)
    recipes.resolve("default", m2, t2, r2, {"budget"}, 1_000_000, 65, fine_tuning=True)
    assert (m2.model, m2.hidden_size) == ("gru", 77) and t2.lr < t.lr


def test_book_changes_nothing_and_unknown_recipes_are_refused():
    m, t, r = ModelConfig(), TrainConfig(), RunConfig(recipe="book")
    before = (m.to_dict(), t.to_dict(), r.to_dict())
    recipes.resolve("book", m, t, r, set(), 1000, 30)
    assert (m.to_dict(), t.to_dict(), r.to_dict()) == before
    with pytest.raises(UsageError, match="unknown --recipe"):
        recipes.resolve("fancy", m, t, r, set(), 1000, 30)
    d = DataConfig(path="x")
    assert recipes.data_defaults("default", d, set()) == ["val_fraction", "select_fraction"]
    assert d.val_fraction == 0.05 and d.select_fraction == 0.05
    d = DataConfig(path="x")
    recipes.data_defaults("book", d, set())
    assert d.val_fraction == 0


def test_the_cli_applies_the_recipe_and_says_which_values_are_in_force(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(tmp_path / "t.txt"), "--budget", "4s",
                        "--hidden-size", "24", "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True,
                       timeout=HANG_GUARD, env=dict(os.environ, RNNLAB_SIMULATED_STEP_SECONDS="0.02"))  # 200 steps, any host
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("recipe default:") and "model lstm" in first and "hidden-size" not in first
    assert "budget" not in first  # given, so not the recipe's
    import json

    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["model"] == "lstm" and cfg["model"]["hidden_size"] == 24 and cfg["run"]["recipe"] == "default"
    assert cfg["run"]["budget"] == 4.0 and cfg["data"]["val_fraction"] == 0.05
    book = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(tmp_path / "t.txt"), "--recipe", "book",
                           "--epochs", "1", "--hidden-size", "8", "--out", str(tmp_path / "book"), "--quiet",
                           "--predict-every", "0"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert book.returncode == 0 and not book.stdout.startswith("recipe"), book.stderr
    cfg = json.loads((tmp_path / "book" / "config.json").read_text())
    assert (cfg["model"]["model"], cfg["train"]["optimizer"], cfg["train"]["lr"]) == ("rnn", "sgd", 1.0)
    helptext = subprocess.run([sys.executable, "-m", "rnnlab", "train", "--help"], capture_output=True, text=True).stdout
    assert "--recipe {default,book}" in helptext and "(default: default)" in helptext and "--budget TIME" in helptext


def test_the_default_recipe_picks_the_fast_kernels_before_the_combination_is_checked():
    from rnnlab import recipes
    from rnnlab.config import ModelConfig as MC

    m = MC(model="mingru", hidden_size=16, embedding_dim=16)  # mingru has no `concise`: the recipe's fast is needed
    assert recipes.model_defaults("default", m, {"model", "hidden_size", "embedding_dim"}) == ["impl"]
    m.validate()
    assert m.impl == "fast"
    given = MC(model="gru", impl="concise")
    assert recipes.model_defaults("default", given, {"model", "impl"}) == [] and given.impl == "concise"
    book = MC()
    assert recipes.model_defaults("book", book, set()) == [] and book.impl == "concise"
