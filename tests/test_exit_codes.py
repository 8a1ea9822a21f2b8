"""Every command exits with its own code, run after run: no worker thread may still be inside torch
when the interpreter shuts down (that aborts the process with exit 134, "terminate called without
an active exception", after a correct answer)."""
from guards import HANG_GUARD
import subprocess
import sys

from tiny_keyboard_model import tiny_checkpoint

RUNS = 6
LONG = "the time traveller " * 150  # a long context: the worker is busy in torch for a while


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=HANG_GUARD, **kw)


def test_suggest_command_exits_zero_every_time():
    ckpt = tiny_checkpoint()
    for text in ("the time trav", LONG):
        for _ in range(RUNS // 2):
            out = _run([sys.executable, "-m", "rnnlab", "suggest", str(ckpt), text, "--k", "20"])
            assert out.returncode == 0, out.stderr[-500:]
            assert out.stdout.startswith("next characters:")


def test_a_script_that_leaves_the_engine_worker_running_exits_cleanly():
    """A library user's script: ``engine.suggest`` starts the batching worker thread, the script
    ends at once. The worker is stopped before the interpreter shuts down."""
    script = f"""
from rnnlab.checkpoint import load_checkpoint
from rnnlab.suggest import SuggestEngine
ck = load_checkpoint({str(tiny_checkpoint())!r})
engine = SuggestEngine(ck.model, ck.tokenizer)
futures = [engine.submit({LONG!r} + str(i), 20, client=str(i)) for i in range(4)]
print(futures[0].result().mode)
"""
    for _ in range(RUNS):
        out = _run([sys.executable, "-c", script])
        assert out.returncode == 0, out.stderr[-500:]
        assert out.stdout.strip() == "complete"


def test_other_commands_exit_with_their_own_codes(tmp_path):
    ckpt = str(tiny_checkpoint())
    assert _run([sys.executable, "-m", "rnnlab", "generate", ckpt, "--prefix", "the ", "--length", "50"]).returncode == 0
    assert _run([sys.executable, "-m", "rnnlab", "generate", ckpt, "--length", "-1"]).returncode == 2
    assert _run([sys.executable, "-m", "rnnlab", "generate", str(tmp_path / "none")]).returncode == 1
