"""What rnnlab reads besides a corpus, through the real CLI in a subprocess: a checkpoint's files
(no hang on a FIFO, no endless read of a device, weights read without a second copy, NaN and
infinity refused), prepared corpora with impossible settings, and paths stored in a checkpoint."""
from guards import HANG_GUARD
import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

from test_hardening import CORPUS, TINY, one_line_error, run


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "t.txt").write_text(CORPUS)
    r = run("train", d / "t.txt", "--epochs", "2", "--out", d / "run", *TINY)
    assert r.returncode == 0, r.stderr
    return d / "run"


def _copy(ckpt, tmp_path, name="ck"):
    d = tmp_path / name
    shutil.copytree(ckpt, d, ignore=shutil.ignore_patterns("checkpoints", "best"))
    return d


# -- 9. non-finite weights ----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_weights_are_refused_by_every_command(ckpt, tmp_path, value):
    """A checkpoint whose weights hold NaN or infinity (a diverged or tampered run) is refused at
    load with one line by every command that loads it, instead of sampling nonsense, answering
    500, printing NaN as JSON or exiting 0 on nonsense figures."""
    d = _copy(ckpt, tmp_path)
    w = load_file(str(d / "model.safetensors"))
    name = sorted(w)[0]
    w[name].view(-1)[3] = float(value)
    meta = json.loads((d / "config.json").read_text())
    save_file(w, str(d / "model.safetensors"), metadata={"format": "rnnlab-checkpoint", "save_id": meta["save_id"]})
    expected = (f"tensor {name} holds 1 non-finite values", "retrain")
    for args in (["generate", d, "--length", "5"], ["suggest", d, "the ti", "--json"], ["eval", d, "--json"],
                 ["export", d], ["serve", d, "--port", "0"],
                 ["train", ckpt.parent / "t.txt", "--init-from", d,
                  "--epochs", "1", "--out", tmp_path / "ft", *TINY]):
        one_line_error(run(*args, timeout=HANG_GUARD), 1, *expected)


def test_suggest_and_eval_json_are_always_valid_json(ckpt):
    for args in (["suggest", ckpt, "the ti", "--json"], ["eval", ckpt, ckpt.parent / "t.txt", "--json"]):
        r = run(*args)
        assert r.returncode == 0, r.stderr
        json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))


# -- 10. files that are not regular files, or too large ------------------------------------------

@pytest.mark.parametrize("name", ["config.json", "vocab.json", "model.safetensors"])
def test_checkpoint_files_that_are_fifos_do_not_hang(ckpt, tmp_path, name):
    d = _copy(ckpt, tmp_path)
    (d / name).unlink()
    os.mkfifo(d / name)
    for args in (["generate", d, "--length", "5"], ["eval", d]):
        r = run(*args, timeout=HANG_GUARD)  # a hang is a TimeoutExpired: the test fails
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        one_line_error(r, 1, name)


def test_checkpoint_files_that_are_devices_are_not_read(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    (d / "config.json").unlink()
    os.symlink("/dev/zero", d / "config.json")
    one_line_error(run("generate", d, "--length", "5", timeout=HANG_GUARD), 1, "config.json")
    d = _copy(ckpt, tmp_path, "ck2")
    (d / "vocab.json").unlink()
    os.symlink("/dev/zero", d / "vocab.json")
    one_line_error(run("generate", d, "--length", "5", timeout=HANG_GUARD), 1, "vocab.json", "not a regular file")


def test_a_fifo_trainer_state_does_not_hang_resume(ckpt, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(ckpt, d)
    (d / "trainer_state.json").unlink()
    os.mkfifo(d / "trainer_state.json")
    r = run("train", "--resume", "--out", d, "--epochs", "3", timeout=HANG_GUARD)  # a hang: TimeoutExpired
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "using the last complete snapshot" in r.stderr  # the damaged top level is passed over


def test_a_json_file_too_large_for_memory_is_refused_before_reading(ckpt, tmp_path):
    """The size check is the corpora's, made with the memory this machine has (here: pretended
    small through RNNLAB's own memory probe, in the subprocess)."""
    d = _copy(ckpt, tmp_path)
    script = ("import sys, rnnlab.runtime as rt; rt.available_memory = lambda: 10_000; "
              "from rnnlab.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", script, "generate", str(d), "--length", "5"], capture_output=True,
                       text=True, timeout=HANG_GUARD)
    one_line_error(r, 1, "config.json", "too large to read")


def test_init_from_an_empty_path_is_refused(ckpt, tmp_path):
    one_line_error(run("train", ckpt.parent / "t.txt", "--init-from", "", "--out", tmp_path / "o", *TINY), 2,
                   "--init-from is an empty path")


# -- 8. a large checkpoint: no second copy while loading -----------------------------------------

PEAK = r"""
import sys, torch
from rnnlab.checkpoint import load_checkpoint

def peak():  # this process's peak resident memory (VmHWM: since exec, unlike ru_maxrss, which counts the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

before = peak()
ck = load_checkpoint(sys.argv[1])
print(peak() - before, sum(p.numel() * p.element_size() for p in ck.model.parameters()))
"""


def test_loading_a_large_checkpoint_peaks_at_about_its_size(tmp_path):
    """A 63 MiB LSTM: the process's peak memory grows by the model and little else while it loads
    (the file was once read whole, then copied into tensors, then into the model: 2x its size and
    more, so a 4.1 GB checkpoint peaked at 8.4 GB)."""
    from rnnlab.checkpoint import save_checkpoint
    from rnnlab.config import ModelConfig
    from rnnlab.data.tokenizer import Tokenizer
    from rnnlab.data.vocab import Vocab
    from rnnlab.models import build_model

    vocab = Vocab.build(list("abcdefghij "))
    cfg = ModelConfig(model="lstm", impl="concise", hidden_size=768, num_layers=4, vocab_size=len(vocab))
    save_checkpoint(tmp_path / "big", build_model(cfg), Tokenizer(vocab, "raw", "char"), cfg)
    r = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / "big")], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    grown, weights = map(int, r.stdout.split())
    print(f"loading {weights / 2**20:.1f} MiB of weights raised the peak RSS by {grown / 2**20:.1f} MiB")
    assert grown < 1.4 * weights


# -- prepared corpora and paths stored in a checkpoint --------------------------------------------

def test_a_prepared_corpus_with_impossible_settings_or_only_unk_is_refused(ckpt, tmp_path):
    text = ckpt.parent / "t.txt"
    assert run("prepare", text, "--out", tmp_path / "p").returncode == 0
    meta = json.loads((tmp_path / "p" / "prepared.json").read_text())
    for key, bad, fragment in [("preset", "bogus", "unknown --preset 'bogus'"), ("token", "line", "unknown --token"),
                               ("min_freq", -3, "--min-freq must be >= 0"), ("encoding", "klingon", "--encoding")]:
        (tmp_path / "p" / "prepared.json").write_text(json.dumps({**meta, key: bad}))
        one_line_error(run("train", "--prepared", tmp_path / "p", "--epochs", "1", "--out", tmp_path / "o", *TINY),
                       1, fragment, "run rnnlab prepare again")
    (tmp_path / "p" / "prepared.json").write_text(json.dumps(meta))
    vocab = json.loads((tmp_path / "p" / "vocab.json").read_text())
    (tmp_path / "p" / "vocab.json").write_text(json.dumps({**vocab, "tokens": ["<unk>"], "counts": [1]}))
    (tmp_path / "p" / "prepared.json").write_text(json.dumps({**meta, "vocab_size": 1}))
    one_line_error(run("train", "--prepared", tmp_path / "p", "--epochs", "1", "--out", tmp_path / "o", *TINY),
                   1, "only <unk>")
    one_line_error(run("prepare", text, "--out", tmp_path / "q", "--min-freq", "100000"), 2, "only <unk>")


def test_eval_from_another_directory_finds_a_relative_corpus(tmp_path):
    """The run was trained with a path relative to where it started; `eval` and `--resume` run
    from elsewhere still find the text (the checkpoint stores it absolute)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "t.txt").write_text(CORPUS)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", "t.txt", "--val-fraction", "0.2", "--epochs", "1",
                        "--out", "run", *TINY], capture_output=True, text=True, cwd=tmp_path / "a", timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    for args in (["eval", "../a/run", "--json"], ["train", "--resume", "--out", "../a/run", "--epochs", "2"],
                 ["train", "../a/t.txt", "--resume", "--out", "../a/run", "--epochs", "3"]):
        r = subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True,
                           cwd=tmp_path / "b", timeout=HANG_GUARD)
        assert r.returncode == 0, (args, r.stderr)


def test_resume_with_a_source_the_run_did_not_have_names_it(ckpt, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(ckpt, d)
    one_line_error(run("train", "--dataset", "timemachine", "--resume", "--out", d), 2,
                   "--dataset 'timemachine' differs from the checkpoint's run, which has no --dataset")
    r = run("train", "--dataset", "timemachine", "--resume", "--out", d)
    assert "None" not in r.stderr
