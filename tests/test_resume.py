"""Exact resume: an interrupted and resumed run equals an uninterrupted one, bit for bit on CPU."""
from guards import HANG_GUARD
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from rnnlab.checkpoint import load_checkpoint
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.gather import merge_resume
from rnnlab.errors import RnnlabError, UsageError
from rnnlab.pipeline import stored_configs, train_run

TEXT = ("it was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity. ") * 6
TIMING = ("tokens_per_sec", "elapsed_s")


def _metrics(d):
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _configs(path, sampling, epochs, dropout=0.1, model="lstm"):
    mcfg = (ModelConfig(model="unrolled", hidden_size=24, window=3, embedding_dim=8, dropout=dropout)
            if model == "unrolled" else
            ModelConfig(model="lstm", impl="concise", hidden_size=24, num_layers=2, embedding_dim=8, dropout=dropout))
    return (DataConfig(path=str(path), val_fraction=0.1), mcfg,
            TrainConfig(batch_size=4, num_steps=10, sampling=sampling, seed=3, optimizer="adam", lr=0.01),
            RunConfig(recipe="book", epochs=epochs, predict_every=0, save_every=1))


def _weights(d):
    return load_file(str(d / "model.safetensors"))


class StopAfter:
    """Ask the trainer to stop after ``n`` optimizer steps, as a SIGINT handler would."""

    def __init__(self, n):
        self.n = n

    def __call__(self, trainer, loss, tokens):
        if trainer.step == self.n:
            trainer.request_stop()


@pytest.mark.parametrize("sampling,model", [("sequential", "lstm"), ("random", "lstm"), ("sequential", "unrolled")])
def test_resumed_run_equals_uninterrupted_run(tmp_path, sampling, model, monkeypatch):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    quiet = lambda msg: None  # noqa: E731
    full = tmp_path / "full"
    train_run(*_configs(src, sampling, 4, model=model), full, log=quiet)

    # the same run, stopped inside epoch 2 (mid-epoch: carried state, partial sums) then resumed
    part = tmp_path / "part"
    import rnnlab.pipeline as pl
    orig = pl.Trainer

    class Interrupting(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.step_callbacks.append(StopAfter(self.batches_per_epoch + 3))

    monkeypatch.setattr(pl, "Trainer", Interrupting)
    r = train_run(*_configs(src, sampling, 4, model=model), part, log=quiet)
    assert r.interrupted
    monkeypatch.setattr(pl, "Trainer", orig)
    stored = stored_configs(part)
    r2 = train_run(*stored, part, log=quiet, resume=True)
    assert not r2.interrupted and len(r2.history) == 4

    assert _metrics(part) == _metrics(full)
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_can_extend_epochs_but_not_change_the_model(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    d, m, t, rc = _configs(src, "sequential", 2)
    train_run(d, m, t, rc, tmp_path / "run", log=lambda s: None)
    *stored, stored_run = stored_configs(tmp_path / "run")
    d2, m2, t2 = merge_resume(stored, (DataConfig(), ModelConfig(hidden_size=24), TrainConfig()), {"hidden_size"})
    assert m2.hidden_size == 24
    with pytest.raises(UsageError, match="--hidden-size 32 differs from the checkpoint's 24"):
        merge_resume(stored, (DataConfig(), ModelConfig(hidden_size=32), TrainConfig()), {"hidden_size"})
    r = train_run(d2, m2, t2, stored_run.replace(epochs=3), tmp_path / "run", log=lambda s: None, resume=True)
    assert [h["epoch"] for h in r.history] == [1, 2, 3]


def test_new_run_refuses_to_overwrite_and_resume_needs_same_vocab(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    cfgs = _configs(src, "sequential", 1)
    train_run(*cfgs, tmp_path / "run", log=lambda s: None)
    with pytest.raises(UsageError, match="--resume"):
        train_run(*_configs(src, "sequential", 1), tmp_path / "run", log=lambda s: None)
    src.write_text(TEXT + "XYZ!")
    with pytest.raises(RnnlabError, match="different vocabulary"):
        train_run(*stored_configs(tmp_path / "run"), tmp_path / "run", log=lambda s: None, resume=True)


def test_torn_top_level_falls_back_to_last_complete_snapshot(tmp_path):
    """A crash between replacing the top-level files leaves files of two saves; loading notices."""
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    run = tmp_path / "run"
    train_run(*_configs(src, "sequential", 2), run, log=lambda s: None)
    snaps = sorted((run / "checkpoints").iterdir())
    (run / "model.safetensors").write_bytes((snaps[0] / "model.safetensors").read_bytes())  # older weights
    ck = load_checkpoint(run)
    assert ck.path == snaps[-1]


KILL_SCRIPT = r"""
import os, sys, signal
import rnnlab.checkpoint as ck
orig = ck.atomic_write
count = {"n": 0}
def dying(path, data):
    # die (like kill -9) in the middle of writing the weights of the second save
    if path.name == "model.safetensors" and path.parent.name == "run":
        count["n"] += 1
        if count["n"] == 2:
            with open(str(path) + ".partial", "wb") as f:
                f.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return orig(path, data)
ck.atomic_write = dying
from rnnlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_checkpoint_write_leaves_previous_checkpoint_loadable(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", KILL_SCRIPT, "train", str(src), "--epochs", "3", "--save-every", "1",
                        "--hidden-size", "16", "--batch-size", "4", "--num-steps", "10", "--out", str(run), "--quiet",
                        "--predict-every", "0"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert p.returncode == -signal.SIGKILL
    ck = load_checkpoint(run)  # epoch 1's checkpoint, whole
    assert ck.info["epoch"] in (1, 2)
    x = torch.tensor([[1, 2, 3]])
    assert torch.isfinite(ck.model(x)[0]).all()
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", "--resume", "--out", str(run), "--quiet"],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(run).info["epoch"] == 3


def test_sigint_finishes_the_step_checkpoints_and_resumes(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(TEXT * 5)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "rnnlab", "train", str(src), "--epochs", "1000", "--hidden-size", "16",
                          "--batch-size", "4", "--num-steps", "10", "--out", str(run), "--quiet", "--log-every", "1",
                          "--predict-every", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    while time.time() < deadline and not (run / "metrics.jsonl").read_text():
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=HANG_GUARD)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "--resume" in out
    ck = load_checkpoint(run)
    assert ck.info["step"] > 0
