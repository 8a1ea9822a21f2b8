"""The CLI and the library settle a run from the same inputs the same way (``rnnlab.gather`` then
``plan.settle``): one recipe default, the same ``--init-from`` and ``--resume`` merges, the same
one-line refusals. Every speed is the simulated clock's, so nothing depends on the machine."""
from guards import HANG_GUARD
import json
import os
import subprocess
import sys

import pytest

import rnnlab.pipeline as pipeline
import rnnlab.plan as plan_module
from rnnlab.checkpoint import read_configs
from rnnlab.cli import build_parser, main
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.errors import UsageError
from rnnlab.gather import gather
from rnnlab.speed import SIMULATED_CLOCK_ENV

TEXT = "it was the best of times, it was the worst of times, it was the age of wisdom. " * 120
QUIET = lambda msg: None  # noqa: E731


class Settled(Exception):
    """Raised after the library's plan is settled: the test needs the plan, not the training."""


def _dicts(configs):
    return [c.to_dict() for c in configs]


@pytest.fixture
def text(tmp_path, monkeypatch):
    monkeypatch.setenv(SIMULATED_CLOCK_ENV, "0.05")  # every candidate measures the same rate on any host
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    return path


def _cli_plan(monkeypatch, capsys, *argv):
    """The plan ``rnnlab train ARGV`` settles (in this process), and what it printed."""
    seen = []
    real = plan_module.settle

    def capture(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]
    monkeypatch.setattr(plan_module, "settle", capture)
    assert main(["train", *map(str, argv)]) == 0
    monkeypatch.setattr(plan_module, "settle", real)
    assert len(seen) == 1
    return seen[0], capsys.readouterr().out


def _train_run_plan(monkeypatch, run):
    """The plan ``train_run`` settles when ``run()`` calls it (its training stopped before it starts)."""
    seen = []
    real = pipeline.settle

    def capture(*a, **k):
        seen.append(real(*a, **k))
        raise Settled
    monkeypatch.setattr(pipeline, "settle", capture)
    with pytest.raises(Settled):
        run()
    monkeypatch.setattr(pipeline, "settle", real)
    return seen[0]


def _library_plan(monkeypatch, *configs, out, resume=False):
    """The plan ``train_run(*configs, out)`` settles."""
    return _train_run_plan(monkeypatch, lambda: pipeline.train_run(*configs, out, log=QUIET, resume=resume))


def test_one_recipe_default_for_the_library_and_the_cli(capsys):
    assert RunConfig().recipe == "default"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    start = helptext.index("--recipe {default,book} ")  # the option's entry (the usage line has "...book}]")
    entry = helptext[start:helptext.index("--epochs", start)]
    assert entry.count("(default: ") == 1 and entry.endswith(f"(default: {RunConfig().recipe}) ")


def test_the_cli_and_the_library_settle_the_same_run(text, tmp_path, monkeypatch, capsys):
    cli, printed = _cli_plan(monkeypatch, capsys, text, "--budget", "10s", "--dry-run",
                             "--out", tmp_path / "cli")
    lib = _library_plan(monkeypatch, DataConfig(path=str(text)), ModelConfig(), TrainConfig(), RunConfig(budget=10),
                        out=tmp_path / "lib")
    assert lib.run.recipe == "default" and lib.lines[0].startswith("recipe default:")
    assert _dicts(cli.configs) == _dicts(lib.configs)
    assert printed.splitlines()[0] == lib.lines[0]  # the recipe's line: every value it filled
    # ... and the command line itself, in its own process, prints the same settled model
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(text), "--budget", "10s", "--dry-run",
                        "--out", str(tmp_path / "sub")],
                       capture_output=True, text=True, timeout=HANG_GUARD,
                       env=dict(os.environ, **{SIMULATED_CLOCK_ENV: "0.05"}))
    assert r.returncode == 0, r.stderr
    m = lib.model
    assert r.stdout.splitlines()[0] == lib.lines[0]
    assert (f"plan: model {m.model} --impl {m.impl} --hidden-size {m.hidden_size} --embedding-dim {m.embedding_dim} "
            f"--num-layers {m.num_layers} --dropout {m.dropout:g} --precision {lib.run.precision} "
            f"({m.parameter_count():,} parameters)") in r.stdout.splitlines()[-1]


@pytest.fixture
def base(text, tmp_path):
    """A small GRU trained with the book's settings (embedding 8, width 16), to fine-tune."""
    out = tmp_path / "base"
    pipeline.train_run(DataConfig(path=str(text), preset="letters"),
                       ModelConfig(model="gru", hidden_size=16, embedding_dim=8),
                       TrainConfig(batch_size=4, num_steps=16), RunConfig(recipe="book", epochs=1, predict_every=0),
                       out, log=QUIET)
    return out


def test_init_from_merges_the_base_the_same_way(base, text, tmp_path, monkeypatch, capsys):
    cli, _ = _cli_plan(monkeypatch, capsys, text, "--init-from", base, "--recipe", "book", "--epochs", "2",
                       "--dropout", "0.1", "--dry-run", "--out", tmp_path / "cli")
    lib = _library_plan(monkeypatch, DataConfig(path=str(text)), ModelConfig(dropout=0.1), TrainConfig(),
                        RunConfig(recipe="book", epochs=2, init_from=str(base)), out=tmp_path / "lib")
    assert _dicts(cli.configs) == _dicts(lib.configs)
    m = lib.model  # the base's architecture and text settings, the dropout asked for
    assert (m.model, m.hidden_size, m.embedding_dim, m.dropout, lib.data.preset) == ("gru", 16, 8, 0.1, "letters")
    # under the default recipe the base's architecture is the user's choice too: the recipe sizes nothing
    default = gather(DataConfig(path=str(text)), ModelConfig(), TrainConfig(),
                     RunConfig(budget=10, init_from=str(base)))
    assert {"model", "hidden_size", "embedding_dim", "preset", "token"} <= default.explicit


@pytest.mark.parametrize("flags, fields", [
    (["--hidden-size", "32"], {"model": {"hidden_size": 32}}),
    (["--model", "lstm"], {"model": {"model": "lstm"}}),
    (["--token", "word"], {"data": {"token": "word"}}),
])
def test_init_from_conflicts_are_refused_with_the_same_line(base, text, tmp_path, flags, fields):
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(text), "--init-from", str(base), "--recipe",
                        "book", "--out", str(tmp_path / "cli"), *flags], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    with pytest.raises(UsageError) as e:
        pipeline.train_run(DataConfig(path=str(text), **fields.get("data", {})), ModelConfig(**fields.get("model", {})),
                           TrainConfig(), RunConfig(recipe="book", init_from=str(base)), tmp_path / "lib", log=QUIET)
    assert r.returncode == 2 and r.stderr == f"rnnlab: error: {e.value}\n"
    assert not (tmp_path / "lib").exists() and not (tmp_path / "cli").exists()


def test_resume_keeps_the_stored_settings_the_same_way(base, text, tmp_path, monkeypatch, capsys):
    """``train_run(..., resume=True)`` with only what changes, as ``rnnlab train --resume --epochs 3``."""
    lib = _library_plan(monkeypatch, DataConfig(), ModelConfig(), TrainConfig(), RunConfig(epochs=3, predict_every=5),
                        out=base, resume=True)
    stored = read_configs(base)[:4]
    assert _dicts(lib.configs[:3]) == _dicts(stored[:3])
    assert lib.run.to_dict() == stored[3].replace(epochs=3, predict_every=5).to_dict()
    assert lib.run.recipe == "book"  # the stored recipe, not the default one
    cli = _train_run_plan(monkeypatch, lambda: main(["train", "--resume", "--epochs", "3", "--predict-every", "5",
                                                     "--out", str(base), "--quiet"]))
    assert _dicts(cli.configs) == _dicts(lib.configs)


def test_resume_conflicts_are_refused_with_the_same_line(base, text, tmp_path):
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", "--resume", "--hidden-size", "32", "--out", str(base)],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    with pytest.raises(UsageError) as e:
        pipeline.train_run(DataConfig(), ModelConfig(hidden_size=32), TrainConfig(), RunConfig(), base, log=QUIET,
                           resume=True)
    assert r.returncode == 2 and r.stderr == f"rnnlab: error: {e.value}\n" and "--hidden-size 32 differs" in r.stderr


def test_a_run_stored_without_a_recipe_resumes_as_configured(base, monkeypatch):
    """A checkpoint from before the recipe field trained exactly as configured: it reads as the book's."""
    meta = json.loads((base / "config.json").read_text())
    del meta["run"]["recipe"]
    (base / "config.json").write_text(json.dumps(meta))
    assert read_configs(base)[3].recipe == "book"
    r = pipeline.train_run(DataConfig(), ModelConfig(), TrainConfig(), RunConfig(epochs=2), base, log=QUIET,
                           resume=True)
    assert len(r.history) == 2
    after = json.loads((base / "config.json").read_text())
    assert after["run"]["recipe"] == "book" and after["run"]["epochs"] == 2
    assert after["model"] == {**meta["model"]} and after["train"] == meta["train"]
