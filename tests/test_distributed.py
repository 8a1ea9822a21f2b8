"""Data-parallel training: W processes with B/W rows each equal one process with B rows.

The multi-process tests run 2 real processes on the loopback with gloo (as torchrun would start
them), a tiny model and a few steps.
"""
from guards import HANG_GUARD
import json
import os
import random
import socket
import subprocess
import sys
import signal
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnlab.config import ModelConfig, RunConfig, TrainConfig
from rnnlab.data.batching import epoch_batches
from rnnlab.distributed import DistContext, check_batch
from rnnlab.errors import UsageError
from rnnlab.models import build_model
from rnnlab.runtime import seed_everything
from rnnlab.training import Trainer

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]
TEXT = ("it was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity. ") * 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_ranks_take_disjoint_rows_of_the_same_global_batch(sampling):
    ids = torch.arange(500)
    whole = list(epoch_batches(ids, 6, 7, sampling, random.Random(3)))
    shards = [list(epoch_batches(ids, 6, 7, sampling, random.Random(3), rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == len(whole) for s in shards)
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([s[i][0] for s in shards]), x)  # rows of rank 0, 1, 2 = (B, T)
        assert torch.equal(torch.cat([s[i][1] for s in shards]), y)
        assert all(s[i][0].shape == (2, 7) for s in shards)


def test_global_batch_must_divide_over_the_processes():
    assert check_batch(8, DistContext(0, 4)) == 2
    with pytest.raises(UsageError, match="divisible"):
        check_batch(6, DistContext(0, 4))


# -- two real processes ------------------------------------------------------------------------
SETUP = dict(model="lstm", hidden_size=12, num_layers=2, embedding_dim=6)


def _ids(n=900, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 11, (n,), generator=g)


def _cfg(sampling):
    return TrainConfig(batch_size=4, num_steps=6, sampling=sampling, seed=5, optimizer="adam", lr=0.01,
                       clip_norm=0.5)


RUN = RunConfig(recipe="book", epochs=2, predict_every=0)


def _single_run(sampling, stop_at=None):
    seed_everything(5)
    model = build_model(ModelConfig(vocab_size=11, **SETUP))
    losses = []
    tr = Trainer(model, _cfg(sampling), _ids(), run=RUN, step_callbacks=[lambda t, loss, n: losses.append(float(loss))])
    tr.fit()
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, tr.history


WORKER = textwrap.dedent("""
    import json, sys
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, sys.argv[2])
    from test_distributed import RUN, SETUP, _cfg, _ids
    from rnnlab.config import ModelConfig
    from rnnlab.distributed import cleanup, reduce_over_ranks, setup, sum_over_ranks
    from rnnlab.models import build_model
    from rnnlab.runtime import seed_everything
    from rnnlab.training import Trainer

    out = sys.argv[1]
    ctx = setup(torch.device("cpu"))
    assert ctx.world_size == 2
    cpu, mine = torch.device("cpu"), [float(ctx.rank + 1), torch.tensor([10.0 * (ctx.rank + 1)]), 7 - ctx.rank]
    result = {"reduced": {op: reduce_over_ranks(mine, ctx, cpu, op) for op in ("sum", "min", "max")}}
    result["reduced"]["sum, rank 0's clock"] = sum_over_ranks(mine, ctx, cpu, main_only=(1,))

    # the measuring's decisions (plan) on ranks that see different things: rank 0 steps at 100 tokens/s,
    # rank 1 at 50, has no bfloat16, and only rank 0 remembers a rate
    import rnnlab.plan as plan
    from rnnlab.config import RunConfig
    plan.step_rates = lambda cand, tcfg, device, rows=None, precisions=("fp32",), seconds=0.0, deadline=None: (
        {p: 100.0 / (ctx.rank + 1) for p in precisions}, 7)
    cand = ModelConfig(vocab_size=11, **SETUP)
    rates, _ = plan._rates(cand, _cfg("random"), cpu, ctx, 2, ("fp32", "bf16"))
    plan.not_worth_measuring = lambda device: "no bfloat16 here" if ctx.rank == 1 else ""
    choice = plan._decide_precision(cand, _cfg("random"), RunConfig(), cpu, ctx, 2)

    class Book:
        remeasure, remembered = False, None

        def get(self, key):
            return (400.0, 1.0) if ctx.rank == 0 else None

        def put(self, rates):
            pass

    remembered, _ = plan._rates(cand, _cfg("random"), cpu, ctx, 2, ("fp32",), book=Book())
    result["plan"] = {"rates": rates, "precision": choice.precision, "why": choice.why, "book": remembered}
    for sampling in ("sequential", "random"):
        seed_everything(5)
        model = build_model(ModelConfig(vocab_size=11, **SETUP))
        losses = []
        tr = Trainer(model, _cfg(sampling), _ids(), run=RUN, dist_ctx=ctx,
                     step_callbacks=[lambda t, loss, n: losses.append(float(loss))])
        tr.fit()
        result[sampling] = {"losses": losses, "history": tr.history}
        if ctx.rank == 0:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/{sampling}.safetensors")

    # interrupted mid-epoch (the request comes from rank 1 only) and resumed in a new trainer
    seed_everything(5)
    model = build_model(ModelConfig(vocab_size=11, **SETUP))
    def stop_on_rank1(t, loss, n):
        if ctx.rank == 1 and t.step == 9:
            t.request_stop()
    tr = Trainer(model, _cfg("sequential"), _ids(), run=RUN, dist_ctx=ctx, step_callbacks=[stop_on_rank1])
    tr.fit()
    state = tr.state_dict()
    result["interrupted"] = {"epoch": tr.epoch, "step": tr.step, "batch_in_epoch": tr.position.batch,
                             "carry_rows": tr.position.carry[0].shape[1]}
    model2 = build_model(ModelConfig(vocab_size=11, **SETUP))
    model2.load_state_dict(model.state_dict())
    tr2 = Trainer(model2, _cfg("sequential"), _ids(), run=RUN, dist_ctx=ctx)
    tr2.load_state_dict(*state)
    tr2.fit()
    result["resumed_history"] = tr2.history
    if ctx.rank == 0:
        save_file({k: v.contiguous() for k, v in model2.state_dict().items()}, f"{out}/resumed.safetensors")
    with open(f"{out}/rank{ctx.rank}.json", "w") as f:
        json.dump(result, f)
    cleanup(ctx)
""")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(out), str(Path(__file__).parent)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outs = [p.communicate(timeout=HANG_GUARD)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_two_processes_with_half_batches_equal_one_process(two_ranks, sampling):
    out, ranks = two_ranks
    losses, weights, history = _single_run(sampling)
    for r in ranks:  # every rank sees the global loss of every step
        assert len(r[sampling]["losses"]) == len(losses) > 10
        assert max(abs(a - b) for a, b in zip(r[sampling]["losses"], losses)) < TOL
        for h_ddp, h in zip(r[sampling]["history"], history):
            assert abs(h_ddp["train_loss"] - h["train_loss"]) < TOL
            assert h_ddp["step"] == h["step"]
    ddp = load_file(str(out / f"{sampling}.safetensors"))
    assert ddp.keys() == weights.keys()
    for k in weights:
        assert torch.allclose(ddp[k], weights[k], atol=TOL, rtol=0), k


def test_reductions_over_the_ranks(two_ranks):
    """Rank 0 holds [1, 10, 7], rank 1 [2, 20, 6]: every rank gets the same reductions."""
    _, ranks = two_ranks
    for r in ranks:
        assert r["reduced"] == {"sum": [3.0, 30.0, 13.0], "min": [1.0, 10.0, 6.0], "max": [2.0, 20.0, 7.0],
                                "sum, rank 0's clock": [3.0, 10.0, 13.0]}


def test_the_measuring_decides_the_same_on_every_rank(two_ranks):
    """The slowest rank's rate (50 tokens/s x 2 ranks), no bfloat16 measuring when one rank has
    none, and a remembered rate only when every rank remembers it (else all measure)."""
    _, ranks = two_ranks
    for r in ranks:
        p = r["plan"]
        assert p["rates"] == {"fp32": 100.0, "bf16": 100.0} and p["precision"] == "fp32"
        assert p["book"] == {"fp32": 100.0}
    assert ranks[0]["plan"]["why"] == "another process's device has no bfloat16"
    assert ranks[1]["plan"]["why"] == "no bfloat16 here"


def test_reductions_in_one_process_are_the_values_themselves():
    from rnnlab.distributed import LOCAL, reduce_over_ranks, sum_over_ranks

    for op in ("sum", "min", "max"):
        assert reduce_over_ranks([1.5, torch.tensor(2.0), 3], LOCAL, torch.device("cpu"), op) == [1.5, 2.0, 3]
    assert sum_over_ranks([1.5, 4], LOCAL, torch.device("cpu"), main_only=(0,)) == [1.5, 4]


def test_a_stop_on_one_rank_stops_all_and_resumes_exactly(two_ranks):
    out, ranks = two_ranks
    _, weights, history = _single_run("sequential")
    for r in ranks:
        i = r["interrupted"]
        assert i["step"] == 10 and i["epoch"] == 0 and i["batch_in_epoch"] == 10  # next step, on both ranks
        assert i["carry_rows"] == 4  # the whole global batch's state, gathered from both ranks
        assert [round(h["train_loss"], 5) for h in r["resumed_history"]] == [round(h["train_loss"], 5) for h in history]
    resumed = load_file(str(out / "resumed.safetensors"))
    for k in weights:
        assert torch.allclose(resumed[k], weights[k], atol=TOL, rtol=0), k


@pytest.mark.parametrize("model", [["--model", "gru"], ["--model", "mingru", "--impl", "fast", "--embedding-dim", "12"]],
                         ids=["gru", "mingru"])
def test_torchrun_cli_trains_resumes_and_only_rank0_writes(tmp_path, model):
    """``torchrun -m rnnlab train`` for 2 epochs, then ``--resume`` to 3, equals one process for 3."""
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    common = [str(src), *model, "--hidden-size", "12", "--batch-size", "4", "--num-steps", "8",
              "--optimizer", "adam", "--lr", "0.01", "--val-fraction", "0.1", "--predict-every", "0", "--quiet",
              "--log-every", "1", "--seed", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "rnnlab", "train", *common, "--epochs", "3", "--out",
                             str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "rnnlab", "train"]
    ddp = tmp_path / "ddp"
    first = subprocess.run([*torchrun, *common, "--epochs", "2", "--out", str(ddp)], env=env, capture_output=True,
                           text=True, timeout=HANG_GUARD)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("done:") == 1 and "2 processes (DDP, 2 rows each)" in first.stdout
    second = subprocess.run([*torchrun, "--resume", "--epochs", "3", "--out", str(ddp)], env=env,
                            capture_output=True, text=True, timeout=HANG_GUARD)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("resuming") == 1
    rows = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for a, b in zip(rows, ref):
        assert abs(a["train_loss"] - b["train_loss"]) < TOL and abs(a["select_loss"] - b["select_loss"]) < TOL
    w, w_ref = load_file(str(ddp / "model.safetensors")), load_file(str(tmp_path / "one" / "model.safetensors"))
    for k in w_ref:
        assert torch.allclose(w[k], w_ref[k], atol=TOL, rtol=0), k
    assert (ddp / "perplexity.png").is_file()


def test_torchrun_refuses_a_batch_that_does_not_divide(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "rnnlab", "train", str(src), "--batch-size", "3", "--num-steps", "5", "--epochs", "1",
                        "--hidden-size", "8", "--quiet", "--out", str(tmp_path / "run")],
                       env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode != 0
    assert "--batch-size 3 is the global batch and must be divisible by the 2 processes" in r.stderr


def test_nproc_launches_the_ranks_and_checks_settings_first(tmp_path):
    """``rnnlab train --nproc 2`` = torchrun with 2 ranks; a usage error is one line, no launcher report."""
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["train", str(src), "--hidden-size", "8", "--batch-size", "4", "--num-steps", "8", "--epochs", "1",
              "--predict-every", "0", "--quiet", "--recipe", "book"]
    r = subprocess.run([sys.executable, "-m", "rnnlab", *common, "--nproc", "2", "--out", str(tmp_path / "run")],
                       env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 processes (DDP, 2 rows each)" in r.stdout and (tmp_path / "run" / "model.safetensors").is_file()
    for bad, says in ((["--lr", "-1"], "--lr"), (["--batch-size", "3"], "divisible by the 2 processes"),
                      (["--nproc=0"], "--nproc")):
        r = subprocess.run([sys.executable, "-m", "rnnlab", *common, "--nproc", "2", *bad, "--out",
                            str(tmp_path / "bad")], env=env, capture_output=True, text=True, timeout=HANG_GUARD)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)
        assert "ChildFailedError" not in r.stderr and r.stderr.count("\n") == 1, (bad, r.stderr)


def _children(pid):
    """The live processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_budget_run(tmp_path):
    from rnnlab.speed import SIMULATED_CLOCK_ENV

    src = tmp_path / "text.txt"
    src.write_text(TEXT * 3)
    env = dict(os.environ, OMP_NUM_THREADS="1", **{SIMULATED_CLOCK_ENV: "0.01"})
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "rnnlab", "train", str(src), "--nproc", "2", "--budget", "2h", "--save-seconds", "1",
                          "--hidden-size", "8", "--batch-size", "4", "--num-steps", "8", "--quiet", "--out", str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None and not list((out / "checkpoints").glob("step-*")):
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()
    ranks = [k for k in _children(p.pid)]
    assert len(ranks) >= 2, ranks
    return p, ranks, out


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_launcher_saves_and_exits_with_its_code(tmp_path, sig, code):
    p, ranks, out = _start_budget_run(tmp_path)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=HANG_GUARD)
    assert p.returncode == code, (stdout, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 1, stderr
    assert "continue with: rnnlab train --resume" in stdout
    assert not any(_alive(r) for r in ranks)


def test_killing_the_launcher_leaves_no_rank_alive(tmp_path):
    p, ranks, out = _start_budget_run(tmp_path)
    p.kill()
    p.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(r) for r in ranks):
        time.sleep(0.1)
    assert not any(_alive(r) for r in ranks)


def test_nproc_is_checked_after_the_recipe_sets_the_batch(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(src), "--nproc", "32", "--epochs", "1",
                        "--hidden-size", "8", "--out", str(tmp_path / "run")],
                       env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 2 and "divisible by the 32 processes" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "run").exists()
