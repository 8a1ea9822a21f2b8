"""Golden losses: a handful of small fixed runs, trained deterministically on the CPU, whose
``metrics.jsonl`` must stay the same bit for bit across a refactoring of the training code.

    python benchmarks/golden.py --out DIR                  # train every run, keep their metrics in DIR
    python benchmarks/golden.py --out NEW --compare OLD    # ... and compare with an earlier DIR (exit 1 if not equal)

Every run goes through the product's own path (``rnnlab.pipeline.train_run``, one through the
``rnnlab train`` command line) under the simulated step clock (``RNNLAB_SIMULATED_STEP_SECONDS``:
every optimizer step counts as a fixed time), so budgets, evaluation points, the plateau and the
final decay fall on the same steps on any machine. The runs:

    book-rnn      the book's recipe: RNN, SGD lr 1, clipping, The Time Machine (letters, 10k tokens)
    lstm-cosine   LSTM --impl fast, Adam, warm-up + cosine over the epochs, a test split
    default-cli   `rnnlab train --budget 20s` (the default recipe: sizing, evaluation points, best weights)
    plateau       a GRU with a budget, a selection slice, --patience and --restore-best: the plateau
                  starts the final decay, which then ends the run
    resume        an LSTM stopped inside its second epoch (``request_stop``, as SIGINT does), resumed
    finetune      --init-from book-rnn on another text, --extend-vocab

Each run's ``metrics.jsonl`` is kept in ``DIR/<run>/metrics.jsonl`` without ``tokens_per_sec``
(measured by the wall clock), and the SHA-256 of its final weights' tensors in ``DIR/<run>/weights.sha256``.
``--compare`` compares every float exactly and names the first difference. About a minute of CPU.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STEP_SECONDS = "0.05"
WALL_CLOCK = ("tokens_per_sec",)  # the only field the simulated clock does not fix
os.environ["RNNLAB_SIMULATED_STEP_SECONDS"] = STEP_SECONDS
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from rnnlab import pipeline  # noqa: E402

QUIET = lambda msg: None  # noqa: E731
LETTERS = dict(dataset="timemachine", preset="letters", max_tokens=10_000)


def book_rnn(work: Path) -> Path:
    out = work / "book-rnn"
    pipeline.train_run(DataConfig(**LETTERS), ModelConfig(model="rnn", hidden_size=64),
                       TrainConfig(batch_size=32, num_steps=35, optimizer="sgd", lr=1.0, clip_norm=1.0),
                       RunConfig(recipe="book", epochs=4, predict_every=0), out, log=QUIET)
    return out


def lstm_cosine(work: Path) -> Path:
    out = work / "lstm-cosine"
    pipeline.train_run(DataConfig(dataset="timemachine", max_tokens=20_000, val_fraction=0.1),
                       ModelConfig(model="lstm", impl="fast", hidden_size=48, embedding_dim=16, dropout=0.1),
                       TrainConfig(batch_size=16, num_steps=32, optimizer="adam", lr=0.01, min_lr=0.001,
                                   lr_schedule="cosine", warmup_steps=10, seed=1),
                       RunConfig(recipe="book", epochs=3, predict_every=0), out, log=QUIET)
    return out


def default_cli(work: Path) -> Path:
    out = work / "default-cli"
    cmd = [sys.executable, "-m", "rnnlab", "train", "--budget", "20s", "--max-tokens", "150000", "--quiet",
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if r.returncode:
        raise SystemExit(f"golden: {' '.join(cmd[2:])} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return out


def plateau(work: Path) -> Path:
    out = work / "plateau"
    pipeline.train_run(DataConfig(dataset="timemachine", max_tokens=12_000, val_fraction=0.1, select_fraction=0.1),
                       ModelConfig(model="gru", impl="fast", hidden_size=96, embedding_dim=32),
                       TrainConfig(batch_size=16, num_steps=32, optimizer="adam", lr=0.02, min_lr=0.0005,
                                   lr_schedule="cosine", warmup_steps=5, seed=2),
                       RunConfig(recipe="book", epochs=1000, budget=40.0, eval_every=0.5, eval_tokens=600,
                                 patience=2, restore_best=True, predict_every=0, save_seconds=0.0), out, log=QUIET)
    return out


def _resume_configs():
    return (DataConfig(dataset="timemachine", max_tokens=8_000, val_fraction=0.1),
            ModelConfig(model="lstm", impl="fast", hidden_size=32, embedding_dim=16, dropout=0.1, num_layers=2),
            TrainConfig(batch_size=8, num_steps=20, optimizer="adam", lr=0.01, lr_schedule="cosine", min_lr=0.001,
                        warmup_steps=5, seed=4),
            RunConfig(recipe="book", epochs=3, predict_every=0, save_every=1))


def resume(work: Path) -> Path:
    out = work / "resume"
    real = pipeline.Trainer

    class Interrupting(real):  # stop after the third step of the second epoch, as a SIGINT would
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            stop_at = self.batches_per_epoch + 3

            def stop(trainer, loss, tokens):
                if trainer.step == stop_at:
                    trainer.request_stop()
            self.step_callbacks.append(stop)

    pipeline.Trainer = Interrupting
    try:
        r = pipeline.train_run(*_resume_configs(), out, log=QUIET)
    finally:
        pipeline.Trainer = real
    if not r.interrupted:
        raise SystemExit("golden: the resume run was not interrupted")
    pipeline.train_run(*pipeline.stored_configs(out), out, log=QUIET, resume=True)
    return out


def finetune(work: Path) -> Path:
    out = work / "finetune"
    pipeline.train_run(DataConfig(dataset="tinyshakespeare", preset="letters", max_tokens=6_000),
                       ModelConfig(model="rnn", hidden_size=64),
                       TrainConfig(batch_size=16, num_steps=35, optimizer="sgd", lr=0.5, clip_norm=1.0, seed=5),
                       RunConfig(recipe="book", epochs=2, predict_every=0, init_from=str(work / "book-rnn"),
                                 extend_vocab=True), out, log=QUIET)
    return out


RUNS = {"book-rnn": book_rnn, "lstm-cosine": lstm_cosine, "default-cli": default_cli, "plateau": plateau,
        "resume": resume, "finetune": finetune}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def keep(run_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in _rows(run_dir / "metrics.jsonl")]
    (dest / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    weights = load_file(str(run_dir / "model.safetensors"))  # the tensors (the file's header holds a save id)
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode() + b"\0" + weights[name].contiguous().numpy().tobytes())
    digest = h.hexdigest()
    (dest / "weights.sha256").write_text(digest + "\n")


def compare(new: Path, old: Path) -> str | None:
    """The first difference between two outputs, or None."""
    for name in RUNS:
        a, b = old / name, new / name
        if not (a / "metrics.jsonl").is_file():
            return f"{name}: no metrics.jsonl in {old}"
        ra, rb = _rows(a / "metrics.jsonl"), _rows(b / "metrics.jsonl")
        for i, (x, y) in enumerate(zip(ra, rb), 1):
            if x.keys() != y.keys():
                return f"{name} line {i}: fields {sorted(x)} before, {sorted(y)} now"
            for k in x:
                if x[k] != y[k] or repr(x[k]) != repr(y[k]):
                    return f"{name} line {i} ({k}): {x[k]!r} before, {y[k]!r} now"
        if len(ra) != len(rb):
            return f"{name}: {len(ra)} records before, {len(rb)} now"
        if (a / "weights.sha256").read_text() != (b / "weights.sha256").read_text():
            return f"{name}: the final weights differ"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="where to keep each run's metrics.jsonl and weights digest")
    ap.add_argument("--compare", help="an earlier --out to compare with, bit for bit")
    ap.add_argument("--only", nargs="*", choices=list(RUNS), help="train only these runs (no --compare then)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        os.environ["RNNLAB_SPEED_FILE"] = str(Path(tmp) / "speed.json")  # no remembered speeds
        work = Path(tmp)
        for name, run in RUNS.items():
            if args.only and name not in args.only and name != "book-rnn":
                continue
            run_dir = run(work)
            keep(run_dir, out / name)
            rows = _rows(out / name / "metrics.jsonl")
            print(f"{name}: {len(rows)} records, last {rows[-1]}", flush=True)
    if args.compare:
        diff = compare(out, Path(args.compare))
        if diff:
            print(f"golden: DIFFERENT: {diff}")
            return 1
        print(f"golden: identical to {args.compare} ({len(RUNS)} runs, every metric and the final weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
