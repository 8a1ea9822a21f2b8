"""End-to-end runs of the ``rnnlab`` command in a subprocess, on small data."""
from guards import HANG_GUARD
import json
import os
import subprocess
import sys

import pytest

CORPUS = ("the time traveller for so it will be convenient to speak of him "
          "was expounding a recondite matter to us his grey eyes shone and twinkled ") * 8


def run(*args, cwd=None, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True, cwd=cwd, env=e,
                          timeout=HANG_GUARD)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "tiny.txt").write_text(CORPUS)
    r = run("train", str(d / "tiny.txt"), "--recipe", "book", "--model", "gru", "--hidden-size", "32", "--batch-size", "8",
            "--num-steps", "16", "--epochs", "30", "--lr", "2", "--out", str(d / "run"), "--predict-every", "10")
    assert r.returncode == 0, r.stderr
    return d, r


def test_train_writes_metrics_and_checkpoint(trained):
    d, r = trained
    lines = [json.loads(x) for x in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == list(range(1, 31))
    for key in ("train_loss", "train_ppl", "tokens_per_sec", "elapsed_s"):
        assert all(key in m for m in lines)
    assert lines[-1]["train_ppl"] < lines[0]["train_ppl"] / 2
    assert {"model.safetensors", "config.json", "vocab.json"} <= {p.name for p in (d / "run").iterdir()}
    assert "done: epoch 30, train perplexity" in r.stdout and "> " in r.stdout


def test_generate_from_checkpoint_alone(trained, tmp_path):
    d, _ = trained
    r = run("generate", str(d / "run"), "--prefix", "the time", "--length", "30", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.rstrip("\n")
    assert out.startswith("the time") and len(out) == len("the time") + 30


def test_word_level_round_trip(tmp_path):
    (tmp_path / "w.txt").write_text(CORPUS)
    r = run("train", str(tmp_path / "w.txt"), "--token", "word", "--hidden-size", "16", "--batch-size", "2",
            "--num-steps", "5", "--epochs", "2", "--out", str(tmp_path / "w"), "--predict-every", "0")
    assert r.returncode == 0, r.stderr
    g = run("generate", str(tmp_path / "w"), "--prefix", "the time", "--length", "5")
    assert g.returncode == 0, g.stderr and len(g.stdout.split()) == 7


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d / "missing.txt", "no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: (d / "e.txt").write_text("   \n") and d / "e.txt", "empty or whitespace"),
    (lambda d: (d / "bad.txt").write_bytes(b"abc\xff\xfe def") and d / "bad.txt", "byte offset 3"),
    (lambda d: (d / "bin.dat").write_bytes(bytes(range(256))) and d / "bin.dat", "binary file"),
    (lambda d: (d / "short.txt").write_text("hello world") and d / "short.txt", "needs at least"),
])
def test_bad_input_files_give_one_line_errors(tmp_path, make, fragment):
    r = run("train", str(make(tmp_path)), "--epochs", "1", "--out", str(tmp_path / "o"))
    assert r.returncode == 1
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("rnnlab: error:") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, fragment", [
    (["--hidden-size", "0"], "--hidden-size must be between 1 and 16384, got 0"),
    (["--lr", "-1"], "--lr must be > 0 and <= 10000, got -1.0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--batch-size", "-3"], "--batch-size must be between 1 and 65536, got -3"),
    (["--model", "transformer"], "invalid choice"),
    (["--dataset", "wikipedia"], "unknown --dataset 'wikipedia'"),
    (["--epochs", "many"], "invalid int value"),
])
def test_bad_hyperparameters_are_usage_errors(tmp_path, args, fragment):
    r = run("train", *args, "--epochs" if "--epochs" not in args else "--seed", "1", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr


def test_generate_missing_checkpoint(tmp_path):
    r = run("generate", str(tmp_path / "none"))
    assert r.returncode == 1 and "no such checkpoint directory" in r.stderr and "Traceback" not in r.stderr


def test_help_on_every_command():
    for cmd in ([], ["train"], ["generate"]):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage: rnnlab" in r.stdout
