"""bfloat16 where the machine has it (``rnnlab.precision``): bf16 training follows the float32 loss
curve, checkpoints stay float32, ``auto`` is decided on measured rates (fixed ones here: no test
depends on the machine's speed), and a bf16 run resumes exactly."""
from guards import HANG_GUARD
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from shipped import shipped_cells

from rnnlab import plan as plan_mod
from rnnlab import precision
from rnnlab.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.errors import UsageError
from rnnlab.models import build_model, precision_notes
from rnnlab.models.cells import get_cell
from rnnlab.pipeline import evaluate_checkpoint, stored_configs, train_run
from rnnlab.runtime import seed_everything
from rnnlab.training import Trainer

TEXT = ("it was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity. ") * 6
CURVE_TOL = 0.02  # nats/token: bf16's per-epoch training loss against float32's, same seed and data (measured: at most
# 0.0064, the LSTM; 0.0004-0.0045 for the other cells over 8 epochs)
TIMING = ("tokens_per_sec", "elapsed_s")


def _run(*args, env=None, timeout=HANG_GUARD):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _ids():
    from rnnlab.data import Vocab

    vocab = Vocab.build(list(TEXT))
    return torch.tensor(vocab.encode(list(TEXT))), len(vocab)


def _curve(model_name, impl, prec, epochs=8):
    ids, V = _ids()
    cell = get_cell(model_name)
    seed_everything(3)
    width = 24
    model = build_model(ModelConfig(model=model_name, impl=impl, hidden_size=width, num_layers=2, vocab_size=V,
                                    embedding_dim=width if cell.width_is_embedding else 8))
    tr = Trainer(model, TrainConfig(batch_size=4, num_steps=16, seed=3, optimizer="adam", lr=0.01), ids,
                 run=RunConfig(epochs=epochs, predict_every=0, precision=prec))
    return [h["train_loss"] for h in tr.fit()]


@pytest.mark.parametrize("model_name", shipped_cells())
def test_bf16_training_follows_the_float32_loss_curve(model_name):
    impl = "fast" if "fast" in get_cell(model_name).impls else get_cell(model_name).impls[0]
    fp32, bf16 = _curve(model_name, impl, "fp32"), _curve(model_name, impl, "bf16")
    assert fp32[-1] < fp32[0] - 0.5 and bf16[-1] < bf16[0] - 0.5  # both learn
    diffs = [abs(a - b) for a, b in zip(fp32, bf16)]
    assert max(diffs) < CURVE_TOL, (fp32, bf16)
    assert fp32 != bf16  # bf16 did run: its arithmetic is not float32's


@pytest.mark.parametrize("model_name", [n for n in shipped_cells() if "concise" in get_cell(n).impls])
def test_bf16_concise_layers_follow_the_float32_loss_curve(model_name):
    fp32, bf16 = _curve(model_name, "concise", "fp32", 4), _curve(model_name, "concise", "bf16", 4)
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) < CURVE_TOL and fp32 != bf16, (fp32, bf16)


def test_bf16_changes_the_arithmetic_not_the_parameters():
    """Under bf16 the products run in bfloat16 (the logits differ from float32's), while the
    weights, their gradients and the carried state stay float32."""
    ids, V = _ids()
    for name in shipped_cells():
        cell = get_cell(name)
        for impl in cell.impls:
            torch.manual_seed(0)
            model = build_model(ModelConfig(model=name, impl=impl, hidden_size=16, num_layers=2, vocab_size=V,
                                            embedding_dim=16 if cell.width_is_embedding else 8))
            x = ids[:48].view(3, 16)
            with torch.no_grad():
                logits32, _ = model(x, model.begin_state(3))
            with precision.autocast("cpu", "bf16"):
                logits, state = model(x, model.begin_state(3))
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[1:49])
            loss.backward()
            assert logits.dtype == torch.bfloat16 and not torch.equal(logits.float(), logits32), (name, impl)
            assert loss.dtype == torch.float32 and all(s.dtype == torch.float32 for s in state), (name, impl)
            assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
                       for p in model.parameters()), (name, impl)


@pytest.mark.parametrize("model_name", [n for n in shipped_cells() if get_cell(n).width_is_embedding])
def test_the_min_cells_scan_runs_in_float32_under_bf16(model_name, monkeypatch):
    """The scan multiplies up to T gates: it gets float32 coefficients under autocast (and in a
    bfloat16 copy), whichever scan runs (C++ or the log-space one)."""
    from rnnlab.models.cells import mingru

    seen = []
    for name in ("linear_scan", "log_scan"):
        orig = getattr(mingru, name)
        monkeypatch.setattr(mingru, name, lambda a, b, h0, *r, _f=orig: seen.append((a.dtype, h0.dtype)) or
                            _f(a, b, h0, *r))
    orig_apply = mingru.NativeScan.apply
    monkeypatch.setattr(mingru.NativeScan, "apply", lambda a, b, h0: seen.append((a.dtype, h0.dtype)) or
                        orig_apply(a, b, h0))
    ids, V = _ids()
    for impl in get_cell(model_name).impls:
        model = build_model(ModelConfig(model=model_name, impl=impl, hidden_size=8, embedding_dim=8, vocab_size=V))
        with precision.autocast("cpu", "bf16"):
            model(ids[:20].view(2, 10), model.begin_state(2))
        copy = precision.for_inference(model, "bf16")
        copy.step(ids[:2], copy.begin_state(2))
    assert seen and all(d == (torch.float32, torch.float32) for d in seen), seen


# -- checkpoints -------------------------------------------------------------------------------------
def _configs(path, prec="bf16", epochs=3, sampling="sequential", model="lstm", impl="fast"):
    return (DataConfig(path=str(path), val_fraction=0.1),
            ModelConfig(model=model, impl=impl, hidden_size=24, num_layers=2, embedding_dim=8, dropout=0.1),
            TrainConfig(batch_size=4, num_steps=10, sampling=sampling, seed=3, optimizer="adam", lr=0.01),
            RunConfig(recipe="book", epochs=epochs, predict_every=0, save_every=1, precision=prec))


def test_a_bf16_run_stores_float32_and_loads_and_evaluates_under_fp32(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    out = tmp_path / "run"
    train_run(*_configs(src), out, log=lambda m: None)
    weights = load_file(str(out / "model.safetensors"))
    state = load_file(str(out / "trainer_state.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert all(t.dtype == torch.float32 for k, t in state.items() if t.is_floating_point())  # optimizer, best
    assert json.loads((out / "config.json").read_text())["run"]["precision"] == "bf16"
    ck = load_checkpoint(out)
    assert all(p.dtype == torch.float32 for p in ck.model.parameters())
    fp32 = evaluate_checkpoint(out, device="cpu")
    bf16 = evaluate_checkpoint(out, device="cpu", precision="bf16")
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    assert abs(fp32["loss"] - bf16["loss"]) < 0.02 and fp32["loss"] != bf16["loss"]
    r = _run("generate", str(out), "--prefix", "it was", "--length", "20", "--precision", "bf16", "--seed", "1")
    assert r.returncode == 0 and r.stdout.startswith("it was"), r.stderr


def test_a_bfloat16_copy_is_saved_as_float32(tmp_path):
    ids, V = _ids()
    cfg = ModelConfig(model="gru", impl="fast", hidden_size=8, vocab_size=V, embedding_dim=4)
    model = build_model(cfg)
    from rnnlab.data import Tokenizer, Vocab

    save_checkpoint(tmp_path / "ck", precision.for_inference(model, "bf16"), Tokenizer(Vocab.build(list(TEXT))), cfg)
    assert all(t.dtype == torch.float32 for t in load_file(str(tmp_path / "ck" / "model.safetensors")).values())


def test_dynamic_evaluation_under_bf16_adapts_float32_weights(tmp_path):
    from rnnlab.config import AdaptConfig

    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    out = tmp_path / "run"
    train_run(*_configs(src, "fp32", epochs=2), out, log=lambda m: None)
    dyn = AdaptConfig(method="sgd", lr=0.3, chunk=10)
    a = evaluate_checkpoint(out, device="cpu", dynamic=dyn)
    b = evaluate_checkpoint(out, device="cpu", dynamic=dyn, precision="bf16")
    change32 = a["dynamic"]["loss"] - a["static_1row"]["loss"]
    change16 = b["dynamic"]["loss"] - b["static_1row"]["loss"]
    assert abs(change32) > 0.02  # the adaptation changes the scores (measured: +0.040 for this barely trained model)
    assert abs(change16 - change32) < 0.005  # and it does the same under bf16 (measured: 0.0005 apart)
    assert b["dynamic"]["loss"] != a["dynamic"]["loss"]  # in bfloat16 arithmetic


# -- exact resume in bf16 ------------------------------------------------------------------------------
def _metrics(d):
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.parametrize("model,impl", [("lstm", "fast"), ("gru", "fast"), ("mingru", "fast")])
def test_a_bf16_run_resumes_exactly(tmp_path, monkeypatch, model, impl):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    quiet = lambda msg: None  # noqa: E731
    cfgs = lambda: _configs(src, "bf16", 3, model=model, impl=impl)  # noqa: E731
    if model == "mingru":
        cfgs = lambda: (lambda c: (c[0], c[1].replace(embedding_dim=24, dropout=0.0), *c[2:]))(  # noqa: E731
            _configs(src, "bf16", 3, model=model, impl=impl))
    full = tmp_path / "full"
    train_run(*cfgs(), full, log=quiet)
    import rnnlab.pipeline as pl

    orig = pl.Trainer

    class Interrupting(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            stop_at = self.batches_per_epoch + 2
            self.step_callbacks.append(lambda t, loss, n: t.request_stop() if t.step == stop_at else None)

    part = tmp_path / "part"
    monkeypatch.setattr(pl, "Trainer", Interrupting)
    assert train_run(*cfgs(), part, log=quiet).interrupted
    monkeypatch.setattr(pl, "Trainer", orig)
    stored = stored_configs(part)
    assert stored[3].precision == "bf16"  # --resume continues in the run's precision
    train_run(*stored, part, log=quiet, resume=True)
    assert _metrics(part) == _metrics(full)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- auto: decided on measured rates ----------------------------------------------------------------------
def test_choose_takes_bf16_only_when_faster_by_the_margin():
    assert precision.choose(1000.0, 1000.0) == "fp32"  # not faster
    assert precision.choose(1000.0, 800.0) == "fp32"  # slower (bf16 emulated)
    assert precision.choose(1000.0, 1099.0) == "fp32"  # faster, but within the margin
    assert precision.choose(1000.0, 1100.0) == "bf16"
    assert precision.choose(1000.0, None) == "fp32" and precision.choose(0.0, 5.0) == "fp32"


class FixedRates:
    """A machine whose training step runs at ``flops`` (6 flops per parameter per token) in float32
    and ``gain`` times that in bfloat16; records what was measured."""

    def __init__(self, gain, flops=1e10):
        self.gain, self.flops, self.calls = gain, flops, []

    def __call__(self, cand, tcfg, device, rows=None, seconds=0.0, clock=None, precisions=("fp32",), deadline=None):
        self.calls.append((cand.hidden_size, precisions))
        n = cand.parameter_count()
        base = self.flops / (6 * n)
        return {p: base * (self.gain if p == "bf16" else 1.0) for p in precisions}, n


def _settle(monkeypatch, rates, explicit=(), has_bf16=True, **run):
    monkeypatch.setattr(plan_mod, "step_rates", rates)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
    dcfg = DataConfig(dataset="timemachine")
    rcfg = RunConfig(recipe="default", budget=141.0, remeasure=True, **run)  # each machine measured afresh
    return plan_mod.settle(dcfg, ModelConfig(), TrainConfig(), rcfg, set(explicit) | {"budget"}, torch.device("cpu"))


def test_auto_picks_fp32_when_the_measured_step_is_not_faster(monkeypatch):
    rates = FixedRates(gain=1.05)
    plan = _settle(monkeypatch, rates)
    assert plan.run.precision == "fp32"
    first = rates.calls[0]
    assert first[1] == ("fp32", "bf16")  # the first candidate measured decides, both precisions taking turns
    assert all(p == ("fp32",) for _, p in rates.calls[1:])  # then the sizing measures in float32 only
    assert "precision fp32 (auto: the training step at H=" in plan.lines[1] and "1.05x" in plan.lines[1]
    assert "precision fp32" in plan.lines[0]  # the recipe's line says what is in force
    assert plan.rates.to_dict()["precision"]["precision"] == "fp32"


def test_auto_picks_bf16_when_faster_and_sizes_the_model_at_bf16_rates(monkeypatch):
    slow = _settle(monkeypatch, FixedRates(gain=1.0))
    rates = FixedRates(gain=2.0)
    fast = _settle(monkeypatch, rates)
    assert fast.run.precision == "bf16" and slow.run.precision == "fp32"
    assert all(p == ("bf16",) for _, p in rates.calls[1:])
    assert fast.model.hidden_size > slow.model.hidden_size  # the faster precision trains a bigger model
    assert "in bf16" in fast.lines[2]


def test_auto_on_a_cpu_without_bfloat16_measures_nothing_more(monkeypatch):
    rates = FixedRates(gain=3.0)
    plan = _settle(monkeypatch, rates, has_bf16=False)
    assert plan.run.precision == "fp32"
    assert all(p == ("fp32",) for _, p in rates.calls)  # bf16 never measured: no cost to a budget
    assert "no bfloat16 instructions" in plan.lines[1]


def test_explicit_precision_is_not_measured(monkeypatch):
    rates = FixedRates(gain=3.0)
    plan = _settle(monkeypatch, rates, explicit={"precision"}, precision="fp32")
    assert plan.run.precision == "fp32" and all(p == ("fp32",) for _, p in rates.calls)
    rates = FixedRates(gain=0.5)
    plan = _settle(monkeypatch, rates, explicit={"precision"}, precision="bf16")
    assert plan.run.precision == "bf16" and all(p == ("bf16",) for _, p in rates.calls)


def test_the_plan_says_what_stays_float32_under_bf16(monkeypatch):
    plan = _settle(monkeypatch, FixedRates(gain=1.0), explicit={"precision"}, precision="bf16")
    assert plan.model.model == "lstm" and plan.model.impl == "fast"
    assert not [ln for ln in plan.lines if ln.startswith("bf16:")]  # the fused LSTM runs in bfloat16
    assert precision_notes(ModelConfig(model="gru", impl="concise"), "cpu")[0].startswith("torch's GRU")
    assert "float32 kernels" in precision_notes(ModelConfig(model="rnn", impl="fast"), "cpu")[0]
    plan = _settle(monkeypatch, FixedRates(gain=1.0), explicit={"precision"}, precision="bf16", has_bf16=False)
    assert any("no bfloat16 instructions" in ln for ln in plan.lines if ln.startswith("bf16:"))  # said, not refused
    assert "scan runs in float32" in precision_notes(ModelConfig(model="mingru", impl="fast", hidden_size=8,
                                                                 embedding_dim=8), "cpu")[0]


def test_dry_run_says_the_precision_first(tmp_path):
    """With every measurement equal (the simulated clock), auto keeps float32; the first line says so."""
    src = tmp_path / "text.txt"
    src.write_text(TEXT * 10)
    r = _run("train", str(src), "--budget", "60s", "--dry-run", env={"RNNLAB_SIMULATED_STEP_SECONDS": "0.01"})
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("recipe default:") and "precision fp32" in first
    assert "precision fp32 (auto: " in r.stdout
    assert "--precision fp32 (" in r.stdout.splitlines()[-1]  # the settled plan's summary line


# -- usage errors --------------------------------------------------------------------------------------
def test_precision_usage_errors_are_one_line(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    out = tmp_path / "run"
    train_run(*_configs(src, "fp32", epochs=1), out, log=lambda m: None)
    for args in (["generate", str(out), "--int8", "--precision", "bf16"],
                 ["eval", str(out), "--int8", "--precision", "bf16"],
                 ["suggest", str(out), "it w", "--int8", "--precision", "bf16"],
                 ["serve", str(out), "--adapt", "--precision", "bf16", "--port", "0"],
                 ["train", str(src), "--precision", "fp16"]):
        r = _run(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in r.stderr, (args, r.stderr)
    with pytest.raises(UsageError, match="not decided"):
        precision.autocast("cpu", "auto")


def test_a_device_without_bfloat16_is_refused():
    assert precision.unsupported(torch.device("cpu")) == ""
    assert "not on mps" in precision.unsupported(torch.device("mps"))
    with pytest.raises(UsageError, match="--precision bf16: .*mps"):
        precision.check("bf16", torch.device("mps"))
    precision.check("fp32", torch.device("mps"))  # float32 is never refused


# -- several processes ----------------------------------------------------------------------------------
DDP_TOL = 1e-2  # bf16 rounds products of 2 rows per process unlike 4 rows in one (measured: losses 4e-4, weights 3e-3)


def test_nproc_trains_and_resumes_in_bf16_like_one_process(tmp_path):
    """``--nproc 2 --precision bf16`` for 2 epochs, then ``--resume`` to 3 (the stored precision), equals one
    bf16 process for 3 epochs up to bfloat16's rounding of differently split products."""
    src = tmp_path / "text.txt"
    src.write_text(TEXT)
    common = ["train", str(src), "--recipe", "book", "--model", "lstm", "--impl", "fast", "--hidden-size", "12",
              "--embedding-dim", "6", "--batch-size", "4", "--num-steps", "8", "--optimizer", "adam", "--lr", "0.01",
              "--val-fraction", "0.1", "--predict-every", "0", "--quiet", "--log-every", "1", "--seed", "2",
              "--precision", "bf16"]
    one = _run(*common, "--epochs", "3", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    ddp = tmp_path / "ddp"
    first = _run(*common, "--epochs", "2", "--nproc", "2", "--out", str(ddp))
    assert first.returncode == 0 and "2 processes (DDP, 2 rows each)" in first.stdout, first.stdout + first.stderr
    assert json.loads((ddp / "config.json").read_text())["run"]["precision"] == "bf16"
    second = _run("train", "--resume", "--epochs", "3", "--nproc", "2", "--out", str(ddp), "--quiet")
    assert second.returncode == 0, second.stdout + second.stderr
    rows = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for a, b in zip(rows, ref):
        assert abs(a["train_loss"] - b["train_loss"]) < DDP_TOL and abs(a["val_loss"] - b["val_loss"]) < DDP_TOL
    w, w_ref = load_file(str(ddp / "model.safetensors")), load_file(str(tmp_path / "one" / "model.safetensors"))
    assert all(torch.allclose(w[k], w_ref[k], atol=DDP_TOL, rtol=0) for k in w_ref)


# -- one-token work: a bfloat16 copy ---------------------------------------------------------------------
def test_serving_and_suggesting_a_bfloat16_copy():
    """serve --precision bf16: the suggestion process and generation run a bfloat16 copy of the
    float32 checkpoint, with the answers of the float32 model on text it knows well."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from rnnlab.checkpoint import load_for_inference
    from rnnlab.decoding import generate
    from rnnlab.serve import create_app
    from tiny_keyboard_model import tiny_checkpoint

    ck16 = load_for_inference(tiny_checkpoint(), "cpu", precision="bf16")
    ck32 = load_for_inference(tiny_checkpoint(), "cpu")
    assert next(ck16.model.parameters()).dtype == torch.bfloat16
    assert next(ck32.model.parameters()).dtype == torch.float32  # the copy left the checkpoint's model alone
    with TestClient(create_app(ck16), raise_server_exceptions=False) as c:
        r = c.post("/v1/suggest", json={"text": "the time trav", "k": 3})
        assert r.status_code == 200 and r.json()["completions"][0]["word"] == "traveller"
        r = c.post("/v1/generate", json={"prefix": "the time", "length": 30})
        assert r.status_code == 200 and "the time" + r.json()["text"] == generate(ck32.model, ck32.tokenizer,
                                                                                 "the time", 30)
    r = _run("suggest", str(tiny_checkpoint()), "the time trav", "--precision", "bf16", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["completions"][0]["word"] == "traveller", r.stderr


def test_serve_precision_defaults_and_guards(monkeypatch):
    import argparse

    from rnnlab.serve import cli as serve_cli

    def serving(adapting: bool, **given) -> tuple[str, bool]:  # the flags on the command line only
        inference = serve_cli.serving_inference(argparse.Namespace(**given), adapting)
        return inference.precision, inference.int8

    for default in ("fp32", "bf16", "auto"):  # not given: the measured default
        monkeypatch.setattr(serve_cli, "SERVING", default)
        assert serving(False) == (default, False)
        assert serving(True) == ("fp32", False)  # adapting copies train in float32
        assert serving(False, int8=True) == ("fp32", True)  # the int8 copy is served
    monkeypatch.setattr(serve_cli, "SERVING", "int8")
    assert serving(False) == ("fp32", True)
    assert serving(True) == ("fp32", False)
    assert serving(False, precision="bf16") == ("bf16", False)  # given: as given
    assert serving(True, precision="auto") == ("fp32", False)
    with pytest.raises(UsageError, match="two different copies"):  # refused by the settings themselves
        serving(False, int8=True, precision="bf16")
    with pytest.raises(UsageError, match="--adapt"):
        serving(True, precision="bf16")
