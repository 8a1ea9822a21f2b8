"""CLI behaviour beyond the basic round trip: validation, eval, controls, languages, bad input."""
from guards import HANG_GUARD
import json
import os
import subprocess
import sys

import pytest

from conftest import data_available
from rnnlab.speed import SIMULATED_CLOCK_ENV

CORPUS = ("the time traveller for so it will be convenient to speak of him "
          "was expounding a recondite matter to us his grey eyes shone and twinkled ") * 10


def run(*args, cwd=None, input=None):
    return subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=HANG_GUARD, input=input, env=dict(os.environ, PYTHONIOENCODING="utf-8"))


def one_line_error(r, code, fragment):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert fragment in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("rnnlab: error:")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("controls")
    (d / "tiny.txt").write_text(CORPUS)
    r = run("train", str(d / "tiny.txt"), "--model", "lstm", "--hidden-size", "32", "--batch-size", "4",
            "--num-steps", "16", "--epochs", "12", "--optimizer", "adam", "--lr", "0.02", "--val-fraction", "0.2",
            "--lr-schedule", "cosine", "--out", str(d / "run"), "--predict-every", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    return d


def test_validation_metrics_best_checkpoint_and_plot(run_dir):
    rows = [json.loads(x) for x in (run_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    for r in rows:  # the selection slice is scored during training; the test split only at the end
        assert {"select_loss", "select_ppl", "select_bpc", "lr"} <= r.keys() and "val_loss" not in r
        assert r["select_bpc"] == pytest.approx(r["select_loss"] / 0.6931471805599453)
    assert rows[-1]["lr"] < rows[0]["lr"]  # cosine decay
    best = json.loads((run_dir / "run" / "best" / "config.json").read_text())["info"]
    assert best["select_loss"] == pytest.approx(min(r["select_loss"] for r in rows))
    final = json.loads((run_dir / "run" / "config.json").read_text())["info"]
    assert {"val_loss", "val_ppl", "val_bpc"} <= final.keys()
    assert (run_dir / "run" / "perplexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_defaults_to_the_validation_split_and_matches_the_last_epoch(run_dir):
    r = run("eval", str(run_dir / "run"), "--json", "--batch-size", "4", "--num-steps", "16")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    final = json.loads((run_dir / "run" / "config.json").read_text())["info"]  # the test split, scored at the end
    assert got["loss"] == pytest.approx(final["val_loss"], rel=1e-5)
    assert got["tokens"] == int(len(CORPUS) * 0.2) - 1
    text = run("eval", str(run_dir / "run"), str(run_dir / "tiny.txt"))
    assert text.returncode == 0 and "perplexity" in text.stdout and "bits/token" in text.stdout


def test_generation_controls(run_dir, tmp_path):
    d = str(run_dir / "run")
    a = run("generate", d, "--prefix", "the ", "--temperature", "1", "--seed", "3", "--num-samples", "3", "--length", "40")
    b = run("generate", d, "--prefix", "the ", "--temperature", "1", "--seed", "3", "--num-samples", "3", "--length", "40")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.count("--- sample") == 3
    greedy = run("generate", d, "--prefix", "the ", "--length", "40").stdout
    assert run("generate", d, "--prefix", "the ", "--length", "40", "--temperature", "0.7", "--top-k", "1",
               "--seed", "9").stdout == greedy
    (tmp_path / "p.txt").write_text("the ")
    assert run("generate", d, "--prefix-file", str(tmp_path / "p.txt"), "--length", "40").stdout == greedy
    empty = run("generate", d, "--prefix", "", "--length", "20")
    assert empty.returncode == 0 and len(empty.stdout.rstrip("\n")) == 20


def test_unseen_prefix_characters(run_dir):
    d = str(run_dir / "run")
    r = run("generate", d, "--prefix", "the Zebra", "--length", "10")
    assert r.returncode == 0 and "never saw ('Z'" in r.stderr and "<unk>" in r.stderr
    assert r.stdout.startswith("the Zebra")
    one_line_error(run("generate", d, "--prefix", "the Zebra", "--strict"), 2, "drop --strict")


@pytest.mark.parametrize("args, fragment", [
    (["--top-p", "0"], "--top-p must be > 0 and <= 1, got 0.0"),
    (["--temperature", "-1"], "--temperature must be between 0 and 100, got -1.0"),
    (["--num-samples", "0"], "--num-samples must be between 1 and 1000, got 0"),
    (["--length", "-5"], "--length must be between 0 and 10000, got -5"),
])
def test_bad_generation_values(run_dir, args, fragment):
    one_line_error(run("generate", str(run_dir / "run"), *args), 2, fragment)


def test_resume_refuses_changed_model_and_foreign_dirs(run_dir, tmp_path):
    one_line_error(run("train", "--resume", "--out", str(run_dir / "run"), "--hidden-size", "64"), 2,
                   "--hidden-size 64 differs from the checkpoint's 32")
    one_line_error(run("train", "--resume", "--out", str(tmp_path / "nothing")), 2, "no checkpoint to resume")
    one_line_error(run("train", str(run_dir / "tiny.txt"), "--out", str(run_dir / "run")), 2, "already holds a checkpoint")


def test_corrupt_and_truncated_checkpoints_via_cli(run_dir, tmp_path):
    import shutil
    d = tmp_path / "ck"
    shutil.copytree(run_dir / "run", d, ignore=shutil.ignore_patterns("checkpoints"))
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    one_line_error(run("generate", str(d)), 1, "corrupt or truncated")
    (d / "config.json").write_text("{")
    one_line_error(run("generate", str(d)), 1, "not valid JSON")


def test_max_seconds_stops_evaluates_and_checkpoints(tmp_path):
    """--max-seconds 3 on the simulated clock (every step 20 ms, on any host): the limit comes after
    150 steps, long before the recipe's early stopping could end the run (a fast host once stopped
    early, and "time limit" never appeared)."""
    (tmp_path / "t.txt").write_text(CORPUS * 20)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(tmp_path / "t.txt"), "--epochs", "100000",
                        "--max-seconds", "3", "--val-fraction", "0.1", "--hidden-size", "16", "--out", str(tmp_path / "o"),
                        "--quiet", "--predict-every", "0"], capture_output=True, text=True, timeout=HANG_GUARD,
                       env=dict(os.environ, **{SIMULATED_CLOCK_ENV: "0.02"}))
    assert r.returncode == 0, r.stderr
    assert "time limit" in r.stdout
    last = json.loads((tmp_path / "o" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "select_loss" in last and 3.0 <= last["elapsed_s"] < 3.1
    assert json.loads((tmp_path / "o" / "config.json").read_text())["info"]["epoch"] == last["epoch"]


NAN_SCRIPT = r"""
import sys
import torch
import rnnlab.training as tr
orig, calls = tr.lm_loss, {"n": 0}
def poisoned(logits, targets):
    calls["n"] += 1
    loss = orig(logits, targets)
    return loss * float("nan") if calls["n"] > 40 else loss   # diverges in a later epoch
tr.lm_loss = poisoned
from rnnlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    (tmp_path / "t.txt").write_text(CORPUS)
    r = subprocess.run([sys.executable, "-c", NAN_SCRIPT, "train", str(tmp_path / "t.txt"), "--epochs", "50",
                        "--hidden-size", "16", "--batch-size", "4", "--num-steps", "16", "--out", str(tmp_path / "o"),
                        "--quiet", "--save-every", "1", "--predict-every", "0"], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    one_line_error(r, 1, "lower --lr")
    from rnnlab.checkpoint import load_checkpoint
    import torch
    ck = load_checkpoint(tmp_path / "o")
    assert ck.info["epoch"] >= 1
    assert all(torch.isfinite(p).all() for p in ck.model.parameters())


@pytest.mark.parametrize("args, fragment", [
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 0.9, got 1.5"),
    (["--dropout", "1"], "--dropout must be between 0 and 0.95, got 1.0"),
    (["--num-steps", "0"], "--num-steps must be between 1 and 65536, got 0"),
    (["--clip-norm", "-1"], "--clip-norm must be between 0 and 1e+06, got -1.0"),
    (["--momentum", "0.9", "--optimizer", "adam"], "--momentum applies to --optimizer sgd only"),
    (["--activation", "relu", "--model", "gru"], "--activation applies to --model rnn only"),
    (["--device", "cuda:7"], "--device"),
    (["--device", "tpu"], "unknown --device"),
])
def test_more_bad_hyperparameters(tmp_path, args, fragment):
    (tmp_path / "t.txt").write_text(CORPUS)
    r = run("train", str(tmp_path / "t.txt"), *args, "--epochs", "1", "--out", str(tmp_path / "o"))
    if fragment == "--device" and "cuda" in args[1] and r.returncode == 0:
        pytest.skip("this machine has that many GPUs")
    one_line_error(r, 2, fragment)


def test_datasets_lists_the_registry():
    r = run("datasets", "--json")
    assert r.returncode == 0
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert set(rows) == {"timemachine", "tinyshakespeare", "jaychou", "nietzsche"}
    if data_available("timemachine.txt"):
        assert rows["timemachine"]["cached"] and rows["timemachine"]["bytes"] == 178979


@pytest.mark.skipif(not data_available("jaychou_lyrics.txt.zip"), reason="no local jaychou zip")
def test_jaychou_round_trip_in_chinese(tmp_path):
    r = run("train", "--dataset", "jaychou", "--max-tokens", "3000", "--hidden-size", "64", "--epochs", "3",
            "--batch-size", "8", "--num-steps", "20", "--out", str(tmp_path / "zh"), "--quiet", "--predict-every", "3")
    assert r.returncode == 0, r.stderr
    assert "> 分开" in r.stdout and "> 不分开" in r.stdout
    g = run("generate", str(tmp_path / "zh"), "--prefix", "分开", "--length", "10")
    assert g.returncode == 0, g.stderr
    assert g.stdout.startswith("分开") and len(g.stdout[:-1]) == 12  # 2 + 10 characters (newlines count)
    vocab = json.loads((tmp_path / "zh" / "vocab.json").read_text(encoding="utf-8"))
    assert "分" in vocab["tokens"] and len(vocab["tokens"]) > 2000
