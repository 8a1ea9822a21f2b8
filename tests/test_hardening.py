"""What a user or a client sends never crashes, hangs or tracebacks rnnlab: each class of the
reliability pass, through the real CLI in a subprocess (one line on stderr, exit 2 for usage
errors and 1 otherwise, nothing left behind, the last good checkpoint intact)."""
from guards import HANG_GUARD
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

CORPUS = ("the time traveller for so it will be convenient to speak of him "
          "was expounding a recondite matter to us his grey eyes shone and twinkled\n") * 12
REST = ["--recipe", "book", "--batch-size", "4", "--num-steps", "10", "--predict-every", "0", "--quiet"]
TINY = ["--hidden-size", "16", *REST]


def run(*args, timeout=HANG_GUARD, preexec_fn=None, env=None):
    return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec_fn, env=env or dict(os.environ, PYTHONIOENCODING="utf-8"))


def one_line_error(r, code, *fragments):
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and r.stderr.startswith("rnnlab"), r.stderr[-2000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("rnnlab: warning")]
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard")
    (d / "t.txt").write_text(CORPUS)
    return d / "t.txt"


@pytest.fixture(scope="module")
def ckpt(text):
    out = text.parent / "run"
    r = run("train", text, "--epochs", "2", "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    return out


# -- 5. snapshots, --overwrite, one writer per --out -------------------------------------------

def test_snapshots_are_kept_by_training_position_not_by_name(text, tmp_path):
    """Interrupted snapshots (named interrupted-step-*) must not outlive newer epoch-* ones."""
    import rnnlab.pipeline as pl
    from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from rnnlab.runs import list_snapshots

    run_dir = tmp_path / "run"
    cfgs = (DataConfig(path=str(text)), ModelConfig(hidden_size=16), TrainConfig(batch_size=4, num_steps=10))
    orig = pl.Trainer

    class StopsEarly(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.step_callbacks.append(lambda t, loss, n: t.request_stop() if t.step in (3, 20) else None)

    pl.Trainer = StopsEarly
    try:
        for _ in range(2):  # two interruptions
            resume = (run_dir / "config.json").exists()
            pl.train_run(*cfgs, RunConfig(recipe="book", epochs=20, predict_every=0, keep=2), run_dir, log=lambda m: None, resume=resume)
    finally:
        pl.Trainer = orig
    pl.train_run(*cfgs, RunConfig(recipe="book", epochs=20, predict_every=0, keep=2), run_dir, log=lambda m: None, resume=True)
    names = [p.name for p in list_snapshots(run_dir)]
    assert names == ["epoch-000018", "epoch-000020"], names
    # a torn top level now falls back to the newest snapshot, epoch 20, not an old interrupted one
    (run_dir / "model.safetensors").write_bytes(b"garbage")
    r = run("generate", run_dir, "--length", "5")
    assert r.returncode == 0 and "epoch-000020" in r.stderr and "unreadable" in r.stderr


def test_overwrite_clears_the_previous_run(text, tmp_path):
    out = tmp_path / "run"
    assert run("train", text, "--epochs", "3", "--val-fraction", "0.2", "--select-fraction", "0.1", "--save-every", "1",
               "--out", out, *TINY).returncode == 0
    assert (out / "best").is_dir() and len(list((out / "checkpoints").iterdir())) == 2
    (out / "notes.txt").write_text("mine")  # not the run's: left alone
    r = run("train", text, "--epochs", "1", "--out", out, "--overwrite", *TINY)
    assert r.returncode == 0, r.stderr
    assert not (out / "best").exists() and [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-000001"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 and (out / "notes.txt").read_text() == "mine"
    # a new run that fails before starting leaves the old one untouched
    r = run("train", tmp_path / "missing.txt", "--out", out, "--overwrite", *TINY)
    one_line_error(r, 1, "no such file")
    assert (out / "checkpoints" / "epoch-000001").is_dir()


def test_a_second_training_into_the_same_out_is_refused(text, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-m", "rnnlab", "train", str(text), "--epochs", "100000", "--out", str(out),
                              "--log-every", "1", *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)  # polling for the first run's first epoch, with a deadline
        r = run("train", text, "--epochs", "1", "--out", out, "--overwrite", *TINY)
        one_line_error(r, 2, "another `rnnlab train` is writing to")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=HANG_GUARD)
    assert first.returncode == 130 and json.loads((out / "config.json").read_text())["info"]["step"] > 0


# -- 6. operating-system errors ----------------------------------------------------------------

def test_output_paths_that_cannot_be_written(text, tmp_path):
    (tmp_path / "afile").write_text("x")
    one_line_error(run("train", text, "--out", tmp_path / "afile", *TINY), 2, "is a file")
    one_line_error(run("train", text, "--out", tmp_path / "afile" / "sub", *TINY), 1, "cannot write to --out")
    one_line_error(run("train", text, "--out", "", *TINY), 2, "--out is empty")
    one_line_error(run("prepare", text, "--out", tmp_path / "afile"), 2, "is a file")
    one_line_error(run("train", text, "--out", "/proc/rnnlab-run", *TINY), 1, "cannot write to --out")


def _limit_file_size():
    """A child that may write at most 64 KiB per file (writes beyond fail with EFBIG, as on a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_save_that_fails_midway_leaves_no_temporary_folders_and_the_last_checkpoint_intact(ckpt, text, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(ckpt, run_dir)
    before = (run_dir / "model.safetensors").read_bytes()
    # a larger model's weights (> 64 KiB) cannot be written: the save fails like on a full disk
    r = run("train", text, "--epochs", "1", "--out", run_dir, "--overwrite", "--hidden-size", "128",
            *REST, preexec_fn=_limit_file_size)
    one_line_error(r, 1, "cannot write")
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    r = run("train", text, "--resume", "--out", run_dir, "--epochs", "2", *REST, preexec_fn=_limit_file_size)
    assert (run_dir / "model.safetensors").read_bytes() == before or r.returncode == 0
    assert run("generate", run_dir, "--length", "5").returncode == 0


def test_inputs_that_are_not_readable_text_files(tmp_path):
    one_line_error(run("train", tmp_path, *TINY), 1, "is a directory")
    one_line_error(run("train", "/dev/zero", "--out", tmp_path / "o", *TINY, timeout=HANG_GUARD), 1, "not a regular file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_line_error(run("train", fifo, "--out", tmp_path / "o", *TINY, timeout=HANG_GUARD), 1, "not a regular file")
    one_line_error(run("prepare", fifo, "--out", tmp_path / "p", timeout=HANG_GUARD), 1, "not a regular file")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    one_line_error(run("train", loop, "--out", tmp_path / "o", *TINY), 1, "symbolic-link loop")
    one_line_error(run("generate", loop), 1, "symbolic-link loop")
    assert not (tmp_path / "o").exists()  # a run that failed before writing leaves no folder


def test_generate_with_a_missing_prefix_file(ckpt, tmp_path):
    one_line_error(run("generate", ckpt, "--prefix-file", tmp_path / "nope.txt"), 1, "no such file")
    (tmp_path / "empty.txt").write_text("")
    r = run("generate", ckpt, "--prefix-file", tmp_path / "empty.txt", "--length", "7")
    assert r.returncode == 0 and len(r.stdout.rstrip("\n")) >= 1


def test_utf16_text_is_read_with_its_encoding(tmp_path):
    (tmp_path / "u16.txt").write_bytes(CORPUS.encode("utf-16"))
    one_line_error(run("train", tmp_path / "u16.txt", "--out", tmp_path / "a", *TINY), 1, "binary", "utf-16")
    r = run("train", tmp_path / "u16.txt", "--encoding", "utf-16", "--epochs", "1", "--out", tmp_path / "b", *TINY)
    assert r.returncode == 0, r.stderr
    r = run("prepare", tmp_path / "u16.txt", "--encoding", "utf-16", "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr


# -- 7. sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, fragment", [
    (["--hidden-size", "10000000"], 2, "--hidden-size must be between 1 and"),
    (["--hidden-size", "1e7"], 2, "invalid int value"),
    (["--embedding-dim", "1000000000"], 2, "--embedding-dim must be between 0 and"),
    (["--model", "unrolled", "--window", "1000000000"], 2, "--window must be between 1 and"),
    (["--num-layers", "1000000"], 2, "--num-layers must be between 1 and"),
    (["--hidden-size", "16384", "--num-layers", "64"], 2, "available"),
])
def test_sizes_are_checked_before_allocating(text, tmp_path, args, code, fragment):
    r = run("train", text, "--out", tmp_path / "o", *REST, *args, timeout=HANG_GUARD)
    assert r.returncode == code and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_generation_sizes(ckpt):
    one_line_error(run("generate", ckpt, "--num-samples", "100000000"), 2, "--num-samples must be between 1 and")
    one_line_error(run("generate", ckpt, "--length", "100000000"), 2, "--length must be between 0 and")


def test_a_checkpoint_whose_sizes_do_not_match_its_weights_is_refused_before_allocating(ckpt, tmp_path):
    bad = tmp_path / "big"
    shutil.copytree(ckpt, bad, ignore=shutil.ignore_patterns("checkpoints", "best"))
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model"]["hidden_size"] = 16000
    (bad / "config.json").write_text(json.dumps(cfg))
    r = run("generate", bad, "--length", "5")  # found from the file's header, before any model is built
    one_line_error(r, 1, "the weights do not fit the model in config.json", "[26, 16] in the file, [26, 16000] by the config")


# -- 8. damaged checkpoints --------------------------------------------------------------------

def _damaged(ckpt, tmp_path, name, edit):
    d = tmp_path / name
    shutil.copytree(ckpt, d, ignore=shutil.ignore_patterns("checkpoints", "best"))
    edit(d)
    return d


def _edit_json(file, change):
    def edit(d):
        data = json.loads((d / file).read_text())
        change(data)
        (d / file).write_text(json.dumps(data))
    return edit


@pytest.mark.parametrize("name, edit, fragment", [
    ("model-list", _edit_json("config.json", lambda c: c.__setitem__("model", [1, 2])), "expected an object"),
    ("hidden-bool", _edit_json("config.json", lambda c: c["model"].__setitem__("hidden_size", True)), "--hidden-size must be an integer"),
    ("lr-text", _edit_json("config.json", lambda c: c["train"].__setitem__("lr", "fast")), "--lr must be a number"),
    ("model-name", _edit_json("config.json", lambda c: c["model"].__setitem__("model", "transformer")), "unknown --model"),
    ("vocab-ints", _edit_json("vocab.json", lambda v: v.__setitem__("tokens", list(range(len(v["tokens"]))))), "non-empty texts"),
    ("vocab-counts", _edit_json("vocab.json", lambda v: v.__setitem__("counts", "many")), "'counts'"),
    ("weights-garbage", lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "cannot read the weights"),
    ("weights-empty", lambda d: (d / "model.safetensors").write_bytes(b""), "cannot read the weights"),
    ("config-deep", lambda d: (d / "config.json").write_text("[" * 100000), "not valid JSON"),
])
def test_damaged_checkpoints_give_one_line_per_problem(ckpt, tmp_path, name, edit, fragment):
    d = _damaged(ckpt, tmp_path, name, edit)
    for command in (["generate", d], ["eval", d, d.parent.parent / "hard0" / "t.txt"], ["suggest", d, "the ti"]):
        r = run(*command)
        one_line_error(r, 1, fragment)
    r = run("serve", d, "--port", "0", timeout=HANG_GUARD)
    one_line_error(r, 1, fragment)


def test_a_trainer_state_missing_keys_is_named(ckpt, tmp_path):
    d = _damaged(ckpt, tmp_path, "state", _edit_json("trainer_state.json", lambda s: s.pop("optimizer")))
    one_line_error(run("train", "--resume", "--out", d, "--epochs", "3"), 1, "lacks optimizer")


# -- 9. numeric flags --------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--lr", "1e39"], "--lr must be > 0 and <= 10000"),
    (["--seed", str(2**64)], "--seed must be between 0 and"),
    (["--device", "meta"], "rnnlab runs on cpu, cuda or mps"),
    (["--device", "xpu"], "rnnlab runs on cpu, cuda or mps"),
    (["--device", "nonsense"], "unknown --device"),
    (["--min-lr", "2", "--lr", "1", "--lr-schedule", "cosine"], "--min-lr 2 is above --lr 1"),
    (["--min-freq", "100000"], "leaves only <unk>"),
])
def test_numeric_and_device_flags_are_usage_errors(text, tmp_path, args, fragment):
    one_line_error(run("train", text, "--out", tmp_path / "o", *TINY, *args), 2, fragment)


@pytest.mark.parametrize("args, ok", [(["--temperature", "1e-300"], True), (["--temperature", "1e300"], False),
                                      (["--temperature", "1", "--top-p", "1e-300"], True),
                                      (["--device", "meta"], False), (["--seed", str(2**64)], False)])
def test_generation_flags(ckpt, args, ok):
    r = run("generate", ckpt, "--length", "20", "--prefix", "the ", *args)
    if ok:
        assert r.returncode == 0 and len(r.stdout) >= 24, r.stderr
    else:
        one_line_error(r, 2, "--")


# -- low ---------------------------------------------------------------------------------------

def test_a_diverged_run_fails(text, tmp_path):
    r = run("train", text, "--epochs", "3", "--lr", "10000", "--clip-norm", "0", "--out", tmp_path / "o", *TINY)
    one_line_error(r, 1, "diverged")


def test_errors_replace_is_saved_so_eval_and_resume_work(tmp_path):
    (tmp_path / "latin.txt").write_bytes(CORPUS.encode() + "café crème\n".encode("latin-1") * 5)
    out = tmp_path / "run"
    r = run("train", tmp_path / "latin.txt", "--errors", "replace", "--epochs", "1", "--val-fraction", "0.2",
            "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["data"]["errors"] == "replace"
    assert run("eval", out).returncode == 0
    assert run("train", "--resume", "--out", out, "--epochs", "2").returncode == 0


def test_eval_of_a_prepared_run_names_its_corpus(text, tmp_path):
    assert run("prepare", text, "--out", tmp_path / "p").returncode == 0
    out = tmp_path / "run"
    assert run("train", "--prepared", tmp_path / "p", "--val-fraction", "0.2", "--epochs", "1", "--out", out,
               *TINY).returncode == 0
    r = run("eval", out)
    assert r.returncode == 0 and "None" not in r.stdout and "prepared" in r.stdout, r.stdout


def test_resume_messages_name_real_flags_and_the_differing_token(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text(CORPUS)
    out = tmp_path / "run"
    assert run("train", src, "--epochs", "1", "--out", out, *TINY).returncode == 0
    other = tmp_path / "other.txt"
    other.write_text(CORPUS)
    one_line_error(run("train", other, "--resume", "--out", out), 2, "the text FILE", "differs from the checkpoint's")
    src.write_text(CORPUS.replace("v", "Q"))  # the same number of distinct characters, one of them different
    r = run("train", "--resume", "--out", out)
    one_line_error(r, 1, "different vocabulary", "'Q'")
