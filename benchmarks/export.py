"""Ship-to-device measurements for one checkpoint: file sizes, single-stream speed, held-out loss,
for PyTorch float32, PyTorch int8 (``rnnlab.export.quantize_model``), onnxruntime float32 and
onnxruntime int8 (``rnnlab.export.export_onnx(..., int8=True)``).

    RNNLAB_DATA_DIR=../shared/data python benchmarks/export.py runs/shakes
    python benchmarks/export.py runs/shakes --out /tmp/shakes-onnx --steps 2000 --rounds 5 --threads 1

* sizes: the checkpoint's model.safetensors (float32), model.onnx, model.int8.onnx, and
  ``torch.save`` of the float32 and of the int8 PyTorch state_dict;
* speed, one stream (N = 1), ``--threads`` intra-op threads for torch and onnxruntime alike: µs per
  one-token step (ids and state in, logits and state out; the best of ``--rounds`` rounds of
  ``--steps`` steps, after a warm-up), and generation chars/s (the same loop plus a softmax and a
  sampled next token fed back); and µs per step of ``--rows`` rows (a suggestion search's batch);
* held-out loss (nats/token) on the checkpoint's validation split (its ``--val-fraction``, the last
  part of the stream): every backend steps ``--eval-rows`` contiguous rows one token at a time with
  its own state carried (the tail that does not fill the rows is one more row), the layout of
  ``rnnlab eval``; ``rnnlab.training.evaluate`` is printed beside it for float32 and int8 PyTorch.
  Dynamic int8 quantises activations per call over all rows, so the int8 figures depend a little
  on ``--eval-rows``.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from rnnlab import LanguageModel, evaluate, load_checkpoint, prepare_data
from rnnlab.export import (
    INT8_FILE,
    MODEL_FILE,
    export_onnx,
    onnx_session,
    quantize_model,
    state_names,
)


def saved_size(model: torch.nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (for int8: packed weights and their scales)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def torch_stepper(model):
    """(ids (N,) long, state) -> (logits (N, V) float tensor, state), and the initial state for N rows."""
    def step(ids, state):
        with torch.inference_mode():
            logits, state = model(ids[:, None], state)  # (N, 1, V)
        return logits[:, 0], state
    return step, lambda n: model.begin_state(n, "cpu")


def ort_stepper(path, names, begin, threads: int = 1):
    sess = onnx_session(path, threads)

    def step(ids, state):
        out = sess.run(None, {"ids": ids.numpy(), **dict(zip(names, state))})
        return torch.from_numpy(out[0]), out[1:]
    return step, lambda n: [s.numpy().copy() for s in begin(n, "cpu")]


def inference_step(model):
    """rnnlab's specialised one-token step (generation, suggestions), if this tree has one."""
    base = getattr(LanguageModel, "step", None)
    if getattr(type(model), "step", None) not in (None, base):
        return model.step  # RNNLM.step
    try:
        from rnnlab.models.step import BatchStep  # older trees
    except ImportError:
        return None
    step = BatchStep(model)
    return step if step.specialised else None


def stream_loss(step, begin, ids: torch.Tensor, rows: int) -> float:
    """Mean NLL of ids[1:] given the ids before, read as ``rows`` contiguous rows stepped side by side."""
    n = len(ids) - 1
    row = n // rows
    total, count = 0.0, 0
    parts = [(ids[:rows * row].reshape(rows, row), ids[1:rows * row + 1].reshape(rows, row))]  # (rows, row) each
    if rows * row < n:
        parts.append((ids[rows * row:-1].reshape(1, -1), ids[rows * row + 1:].reshape(1, -1)))  # the tail
    for x, y in parts:
        state = begin(x.shape[0])
        for t in range(x.shape[1]):
            logits, state = step(x[:, t], state)  # (rows, V)
            total += float(F.cross_entropy(logits.float(), y[:, t], reduction="sum"))
            count += y.shape[0]
    return total / count


def speed(step, begin, vocab_size: int, steps: int, rounds: int, generate: bool, rows: int = 1) -> float:
    """Best round's seconds per step for ``rows`` rows (``generate``, one row: plus a softmax, a sampled
    id fed back)."""
    rng = np.random.default_rng(0)
    ids, state = torch.ones(rows, dtype=torch.long), begin(rows)
    for _ in range(100):
        _, state = step(ids, state)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(steps):
            logits, state = step(ids, state)
            if generate:  # softmax and a sampled id, in NumPy for every backend alike
                p = np.exp(logits[0].numpy() - logits[0].numpy().max())
                ids = torch.tensor([min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum())), vocab_size - 1)])
            else:
                ids = torch.full((rows,), i % vocab_size)
        best = min(best, (time.perf_counter() - t) / steps)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", help="export directory (default: a temporary one)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=16, help="also time steps of this many rows (a suggestion batch)")
    ap.add_argument("--eval-rows", type=int, default=64)
    ap.add_argument("--eval-tokens", type=int, default=0, help="score only the first N held-out tokens (0 = all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="rnnlab-export-"))

    t = time.perf_counter()
    meta = export_onnx(args.checkpoint, out, int8=True)
    print(f"export {out}: {time.perf_counter() - t:.1f} s; checks {meta['checks']}")
    ck = load_checkpoint(args.checkpoint, "cpu", impl="concise")
    model, V = ck.model, len(ck.vocab)
    qmodel = quantize_model(model)
    names = state_names(model)
    float_state = sum(p.numel() * p.element_size() for p in model.state_dict().values())

    sizes = [("safetensors float32 (checkpoint)", (ck.path / "model.safetensors").stat().st_size),
             ("PyTorch float32 state_dict (torch.save)", saved_size(model)),
             ("ONNX float32", (out / MODEL_FILE).stat().st_size),
             ("ONNX int8", (out / INT8_FILE).stat().st_size),
             ("PyTorch int8 state_dict (torch.save)", saved_size(qmodel))]
    print(f"\n{model.cfg.model} H={model.cfg.hidden_size} L={model.cfg.num_layers} E={model.cfg.embedding_dim} "
          f"V={V}: {float_state:,} bytes of float32 weights\n")
    print("| file | bytes | vs safetensors |\n| --- | --- | --- |")
    base = sizes[0][1]
    for name, n in sizes:
        print(f"| {name} | {n:,} | {base / n:.2f}x smaller |" if n != base else f"| {name} | {n:,} | 1 |")

    backends = {"PyTorch float32 (forward, T=1)": torch_stepper(model),
                "PyTorch int8 (quantize_model)": torch_stepper(qmodel),
                "onnxruntime float32": ort_stepper(out / MODEL_FILE, names, model.begin_state, args.threads),
                "onnxruntime int8": ort_stepper(out / INT8_FILE, names, model.begin_state, args.threads)}
    fast_step = inference_step(model)
    if fast_step is not None:
        backends["PyTorch float32 (rnnlab's inference step)"] = (fast_step, lambda n: model.begin_state(n, "cpu"))
    print(f"\n| backend ({args.threads} thread) | µs/step | steps/s | generation chars/s "
          f"| µs/step, {args.rows} rows |\n| --- | --- | --- | --- | --- |")
    for name, (step, begin) in backends.items():
        s = speed(step, begin, V, args.steps, args.rounds, generate=False)
        g = speed(step, begin, V, args.steps, args.rounds, generate=True)
        b = speed(step, begin, V, args.steps // 4, args.rounds, generate=False, rows=args.rows)
        print(f"| {name} | {s * 1e6:.1f} | {1 / s:,.0f} | {1 / g:,.0f} | {b * 1e6:.1f} |", flush=True)

    data = prepare_data(ck.data_config, vocab=ck.vocab)
    if data.val_ids is None or len(data.val_ids) < 2:
        print("\nno validation split in this checkpoint (--val-fraction 0): no held-out loss", file=sys.stderr)
        return
    val = torch.as_tensor(data.val_ids[:args.eval_tokens] if args.eval_tokens else data.val_ids).long()
    print(f"\nheld-out loss, {len(val) - 1:,} targets, {args.eval_rows} rows stepped one token at a time\n")
    print("| backend | loss (nats) | vs float32 | rnnlab.training.evaluate |\n| --- | --- | --- | --- |")
    ref = None
    for name, (step, begin) in list(backends.items())[:4]:
        loss = stream_loss(step, begin, val, args.eval_rows)
        ref = loss if ref is None else ref
        check = {0: model, 1: qmodel}.get(list(backends).index(name))
        ev = f"{evaluate(check, val, args.eval_rows, 256)['loss']:.4f}" if check is not None else ""
        print(f"| {name} | {loss:.4f} | {loss - ref:+.4f} | {ev} |", flush=True)


if __name__ == "__main__":
    from machine import describe  # benchmarks/machine.py: CPU, flags, GEMM rate

    print(describe(), flush=True)
    main()
