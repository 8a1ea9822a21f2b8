"""Recipes: `rnnlab train FILE` with no model or optimiser flags trains the default recipe; `--recipe
book` the book's settings; explicit flags always win; the first log line and `--help` say so."""
import subprocess
import sys

import pytest
from fakeclock import clocked_cli

from rnnlab import recipes
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.errors import UsageError

TEXT = "the recipe decides what the user did not. " * 200


def _resolve(explicit=(), budget=None, tokens=1_000_000, vocab=65, **given):
    m, t, r = ModelConfig(), TrainConfig(), RunConfig(recipe="default")
    for cfg in (m, t, r):
        for k, v in given.items():
            if hasattr(cfg, k):
                setattr(cfg, k, v)
    if budget is not None:
        r.budget = budget
    plan = recipes.resolve("default", m, t, r, set(explicit) | set(given) | ({"budget"} if budget else set()),
                           tokens, vocab)
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


def test_the_model_grows_with_the_budget_and_with_the_corpus():
    sizes = [recipes.size_for(b, 0, 1_000_000, 65) for b in (60, 141, 300, 900, 3600)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    by_corpus = [recipes.size_for(900, 0, n, 65) for n in (20_000, 200_000, 2_000_000, 20_000_000)]
    assert by_corpus == sorted(by_corpus) and by_corpus[0] < by_corpus[-1]
    assert recipes.size_for(900, 0, 1_000_000, 65, gemm_gflops=18.0) < recipes.size_for(900, 0, 1_000_000, 65)
    drops = [recipes.dropout_for(b, 0, 200_000, 256) for b in (10, 141, 900, 3600)]
    assert drops == sorted(drops) and drops[0] == 0 and 0 < drops[-1] <= 0.3


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
    assert recipes.data_defaults("default", d, set()) == ["val_fraction"] and d.val_fraction == 0.05
    d = DataConfig(path="x")
    recipes.data_defaults("book", d, set())
    assert d.val_fraction == 0


def test_the_cli_applies_the_recipe_and_says_which_values_are_in_force(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    r = subprocess.run(clocked_cli(0.01) + ["train", str(tmp_path / "t.txt"), "--budget", "4s",  # ~200 steps, any host
                                             "--hidden-size", "24", "--out", str(tmp_path / "run"), "--quiet"],
                       capture_output=True, text=True, timeout=300)
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
                           "--predict-every", "0"], capture_output=True, text=True, timeout=300)
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
