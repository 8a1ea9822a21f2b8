"""A budget run snapshots inside epochs (at every evaluation point and on a time cadence), so one
killed with -9 at any moment resumes to the same final weights as a run never interrupted. The
simulated clock (every step counts as a fixed time) makes budget runs the same on any machine."""
from guards import HANG_GUARD
import os
import random
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from rnnlab.speed import SIMULATED_CLOCK_ENV

TEXT = "".join(f"note {i}: the budget decides how long we train, the clock says when. " for i in range(300))
ARGS = ["--budget", "12s", "--hidden-size", "16", "--batch-size", "4", "--num-steps", "16", "--quiet", "--seed", "5"]


def _env():
    return {**os.environ, SIMULATED_CLOCK_ENV: "0.05", "OMP_NUM_THREADS": "1"}


def _train(path, out, *extra):
    return subprocess.run([sys.executable, "-m", "rnnlab", "train", str(path), *ARGS, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=HANG_GUARD, env=_env())


def _weights(run):
    return load_file(str(run / "model.safetensors"))


def test_a_budget_run_killed_at_any_moment_resumes_to_the_same_weights(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    whole = _train(text, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    assert "time limit" in whole.stdout or "final decay" in whole.stdout or "early stop" in whole.stdout
    rng = random.Random()
    for attempt in range(2):
        out = tmp_path / f"killed{attempt}"
        p = subprocess.Popen([sys.executable, "-m", "rnnlab", "train", str(text), *ARGS, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and p.poll() is None and not list((out / "checkpoints").glob("step-*")):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.5))  # somewhere after the first snapshot: a save may be under way
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=HANG_GUARD)
        resumed = subprocess.run([sys.executable, "-m", "rnnlab", "train", "--resume", "--out", str(out), "--quiet"],
                                 capture_output=True, text=True, timeout=HANG_GUARD, env=_env())
        assert resumed.returncode == 0, resumed.stderr
        want, got = _weights(tmp_path / "whole"), _weights(out)
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    assert _train(text, tmp_path / "run").returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir() if p.is_file()}
    w = _weights(tmp_path / "run")
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", "--resume", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=HANG_GUARD, env=_env())
    assert r.returncode == 0 and "nothing to resume" in r.stdout, r.stdout + r.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert before == after and all(torch.equal(w[k], v) for k, v in _weights(tmp_path / "run").items())
