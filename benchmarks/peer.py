"""rnnlab against the book's own code (d2l 0.17.6, PyTorch) on the book's configurations.

Setup (once; the script installs nothing itself)::

    pip install -c constraints.txt -r benchmarks/requirements.txt
    pip install --no-deps d2l==0.17.6      # its pinned deps would pull an old torch and torchvision

Run (a full run trains every model for 500 epochs on each side: about 15 minutes on 2 cores)::

    RNNLAB_DATA_DIR=/path/to/data python benchmarks/peer.py            # the README figures
    RNNLAB_DATA_DIR=/path/to/data python benchmarks/peer.py --quick    # a smoke run, seconds

The book side is the book's code as published: ``d2l.load_data_time_machine(32, 35)`` (The Time
Machine, first 10,000 characters, 28 tokens), ``d2l.train_epoch_ch8`` with its own timer,
``d2l.RNNModel`` over ``nn.RNN/GRU/LSTM`` and ``d2l.RNNModelScratch`` with the from-scratch
functions of section 8.5, which live only in the notebook and are transcribed below
(``book_get_params`` ...). ``d2l.torch`` imports torchvision, which the chapter never uses: a stub
module stands in for it. ``d2l.download`` is pointed at the local ``timemachine.txt`` after its
SHA-1 is checked against the one the book pins.

The rnnlab side trains the same model (same sizes, same init family: N(0, 0.01^2) for the scratch
RNN, torch's default for the concise layers) with ``--impl fast`` through ``rnnlab.training.Trainer``
on the same data (``--preset letters --max-tokens 10000``), lr 1, clipping at global norm 1, SGD.

For each configuration both sides alternate in chunks of epochs (book, rnnlab, book, ...) in this
one process, so a change in the machine's load hits both. Reported per configuration:

* median tokens/s over all epochs of each side; for both, an epoch's time is its wall time,
  data iteration included (the book's ``train_epoch_ch8`` timer; for rnnlab a clock around the epoch);
* the final training perplexity of each side (mean over the last epoch, as the book prints it);
* peak memory: the process's peak resident set while that side ran (``VmHWM`` of
  ``/proc/self/status``, reset through ``/proc/self/clear_refs`` before each chunk; whole process,
  so both include the interpreter, torch and the other side's model);
* the products-only ceiling: tokens/s if the minibatch's matrix products, each timed alone (the
  faster of ``torch.mm`` and oneDNN with a prepacked weight), were the whole cost
  (``product_ceiling``; measured after every chunk, median). No implementation of the same
  float32 maths can pass it here, so a target ratio above ceiling/book is out of reach;
* achieved GFLOP/s = tokens/s x the model's matrix-product FLOPs per token (the recurrent product
  forward, its two backward products, and the output layer's three; the one-hot input product is
  not counted since it is a lookup), against a 2048^3 float32 matrix product timed in the same run.

Then generation: characters per second of the book's ``predict_ch8`` (greedy, one character per
call) against ``rnnlab.decoding.generate`` (greedy, state carried) and batched ``generate_ids``,
on each side's trained model of every configuration.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn


# -- the book's code ------------------------------------------------------------------------------

def import_d2l():
    """``d2l.torch`` 0.17.6 with a torchvision stub (it imports torchvision at import time)."""
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms
    try:
        from d2l import torch as d2l
    except ImportError as e:
        sys.exit(f"peer.py needs the book's package: pip install --no-deps d2l==0.17.6 and "
                 f"pip install -r benchmarks/requirements.txt ({e})")
    return d2l


def use_local_time_machine(d2l, data_dir: Path) -> None:
    path = data_dir / "timemachine.txt"
    if not path.is_file():
        sys.exit(f"{path} not found; set RNNLAB_DATA_DIR to a folder holding timemachine.txt")
    want = d2l.DATA_HUB["time_machine"][1]
    got = hashlib.sha1(path.read_bytes()).hexdigest()
    if got != want:
        sys.exit(f"{path}: SHA-1 {got} is not the book's {want}")
    original = d2l.download
    d2l.download = lambda name, cache_dir=None: str(path) if name == "time_machine" else original(name, cache_dir)


# Section 8.5 "RNN from scratch", transcribed from the book (the notebook defines these).
def book_get_params(vocab_size, num_hiddens, device):
    num_inputs = num_outputs = vocab_size

    def normal(shape):
        return torch.randn(size=shape, device=device) * 0.01

    W_xh = normal((num_inputs, num_hiddens))
    W_hh = normal((num_hiddens, num_hiddens))
    b_h = torch.zeros(num_hiddens, device=device)
    W_hq = normal((num_hiddens, num_outputs))
    b_q = torch.zeros(num_outputs, device=device)
    params = [W_xh, W_hh, b_h, W_hq, b_q]
    for param in params:
        param.requires_grad_(True)
    return params


def book_init_rnn_state(batch_size, num_hiddens, device):
    return (torch.zeros((batch_size, num_hiddens), device=device),)


def book_rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    for X in inputs:
        H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)
        Y = torch.mm(H, W_hq) + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H,)


class BookRun:
    """One book model trained chunk by chunk with ``d2l.train_epoch_ch8``."""

    def __init__(self, d2l, model: str, hidden: int, scratch: bool, lr: float = 1.0):
        self.d2l = d2l
        self.train_iter, self.vocab = d2l.load_data_time_machine(32, 35)
        V, dev = len(self.vocab), torch.device("cpu")
        self.device = dev
        if scratch:
            self.net = d2l.RNNModelScratch(V, hidden, dev, book_get_params, book_init_rnn_state, book_rnn)
            self.updater = lambda batch_size: d2l.sgd(self.net.params, lr, batch_size)
        else:
            layer = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[model](V, hidden)
            self.net = d2l.RNNModel(layer, vocab_size=V)
            self.updater = torch.optim.SGD(self.net.parameters(), lr)
        self.loss = nn.CrossEntropyLoss()
        self.speeds, self.ppl, self.ppls = [], float("nan"), []

    def epochs(self, n: int) -> None:
        for _ in range(n):
            ppl, speed = self.d2l.train_epoch_ch8(self.net, self.train_iter, self.loss, self.updater,
                                                  self.device, False)
            self.speeds.append(speed)
            self.ppl = ppl
            self.ppls.append(ppl)

    def generate(self, prefix: str, n: int) -> float:
        start = time.perf_counter()
        self.d2l.predict_ch8(prefix, n, self.net, self.vocab, self.device)
        return n / (time.perf_counter() - start)


# -- rnnlab ---------------------------------------------------------------------------------------

class RnnlabRun:
    def __init__(self, model: str, hidden: int, init: str, impl: str = "fast"):
        from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
        from rnnlab.data import prepare_data
        from rnnlab.models import build_model
        from rnnlab.training import Trainer

        self.data = prepare_data(DataConfig(dataset="timemachine", preset="letters", max_tokens=10000))
        cfg = ModelConfig(model=model, impl=impl, vocab_size=len(self.data.vocab), hidden_size=hidden, init=init)
        self.model = build_model(cfg)
        tcfg = TrainConfig(batch_size=32, num_steps=35, lr=1.0, clip_norm=1.0, sampling="sequential")
        self.trainer = Trainer(self.model, tcfg, self.data.train_ids, run=RunConfig(epochs=1, device="cpu",
                                                                                   predict_every=0))
        self.speeds, self.ppl, self.ppls = [], float("nan"), []

    def epochs(self, n: int) -> None:
        tr = self.trainer
        for _ in range(n):
            tr.run.epochs = tr.epoch + 1  # one more epoch, timed from outside like the book's timer
            start = time.perf_counter()
            tr.fit()
            self.speeds.append(tokens_in_epoch(tr) / (time.perf_counter() - start))
            self.ppl = tr.history[-1]["train_ppl"]
            self.ppls.append(self.ppl)

    def generate(self, prefix: str, n: int, num_samples: int = 1) -> float:
        from rnnlab.config import GenerateConfig
        from rnnlab.decoding import generate, generate_ids

        start = time.perf_counter()
        if num_samples == 1:
            generate(self.model, self.data.tokenizer, prefix, n)
        else:
            generate_ids(self.model, self.data.vocab.encode(list(prefix)), GenerateConfig(length=n, num_samples=num_samples))
        return n * num_samples / (time.perf_counter() - start)


def tokens_in_epoch(trainer) -> int:
    """Target tokens of the epoch just finished: batches x B x T (sequential sampling)."""
    return trainer.batches_per_epoch * trainer.cfg.batch_size * trainer.cfg.num_steps


# -- measurement helpers --------------------------------------------------------------------------

def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def product_ceiling(model: str, hidden: int, vocab: int, B: int = 32, T: int = 35, reps: int = 15) -> float:
    """Tokens/s of training if the matrix products were all there were: each product of one
    minibatch (B=32, T=35) timed alone (median of ``reps``; the faster of ``torch.mm`` and oneDNN
    with a prepacked weight), summed, and
    everything else (elementwise work, loss, optimizer, data, Python) taken to cost nothing.

    Per minibatch: T forward products (B, H) @ (H, G*H), T backward products (B, G*H) @ (G*H, H),
    one weight-gradient product (G*H, T*B) @ (T*B, H), and the output layer's three products.
    No implementation of these maths on this machine can train faster than this.
    """
    g = {"rnn": 1, "gru": 3, "lstm": 4}[model]
    H, N = hidden, B * T

    def median_time(a: torch.Tensor, b: torch.Tensor) -> float:
        """The faster of torch.mm and, where torch has it, oneDNN with the weight prepacked."""
        calls = [lambda: torch.mm(a, b)]
        if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), a.shape[0])
            calls.append(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""))
        best = math.inf
        for call in calls:
            call()
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            best = min(best, statistics.median(times))
        return best

    r = torch.randn
    per_batch = (T * median_time(r(B, H), r(H, g * H)) + T * median_time(r(B, g * H), r(g * H, H))
                 + median_time(r(g * H, N), r(N, H))  # dW_hh, all steps at once
                 + median_time(r(N, H), r(H, vocab)) + median_time(r(N, vocab), r(vocab, H))
                 + median_time(r(vocab, N), r(N, H)))  # output layer: forward, d_input, d_weight
    return N / per_batch


def tail_ppl(ppls: list[float]) -> float:
    """Median perplexity of the last 10% of epochs: at lr 1 single epochs spike (1.04 -> 1.17 and back)."""
    return statistics.median(ppls[-max(1, len(ppls) // 10):]) if ppls else float("nan")


def flops_per_token(model: str, hidden: int, vocab: int) -> float:
    """Matrix-product FLOPs per token: recurrent (forward + 2 backward) and output layer (3)."""
    g = {"rnn": 1, "gru": 3, "lstm": 4}[model]
    return 3 * 2 * hidden * g * hidden + 3 * 2 * hidden * vocab


CONFIGS = [  # name, model, hidden, book scratch?, rnnlab init
    ("scratch RNN 512", "rnn", 512, True, "normal"),
    ("nn.RNN 256", "rnn", 256, False, "torch"),
    ("nn.GRU 256", "gru", 256, False, "torch"),
    ("nn.LSTM 256", "lstm", 256, False, "torch"),
]
TARGETS = {"scratch RNN 512": 2.0, "nn.RNN 256": 2.5, "nn.GRU 256": 3.0, "nn.LSTM 256": 1.5}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: a few epochs per side")
    ap.add_argument("--epochs", type=int, default=500, help="epochs per side and configuration (book: 500)")
    ap.add_argument("--chunk", type=int, default=10, help="epochs per turn before the other side runs")
    ap.add_argument("--gen-chars", type=int, default=500, help="characters generated per timing")
    ap.add_argument("--configs", default="", help="comma-separated subset, e.g. 'nn.GRU 256'")
    ap.add_argument("--impl", default="fast", help="rnnlab implementation to compare (default fast)")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.chunk, args.gen_chars = 4, 2, 100
    data_dir = Path(os.environ.get("RNNLAB_DATA_DIR", Path.home() / ".cache" / "rnnlab" / "data"))
    d2l = import_d2l()
    use_local_time_machine(d2l, data_dir)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; epochs {args.epochs} per side, "
          f"alternating every {args.chunk}", flush=True)
    from rnnlab.models import native
    print("rnnlab C++ time loops: " + ("on" if native.available() else f"off ({native.reason()})"), flush=True)
    peak = gemm_gflops()
    print(f"large matrix product (2048^3 float32): {peak:.0f} GFLOP/s", flush=True)
    rows, gen_rows = [], []
    chosen = [c for c in CONFIGS if not args.configs or c[0] in args.configs.split(",")]
    for name, model, hidden, scratch, init in chosen:
        book, ours = BookRun(d2l, model, hidden, scratch), RnnlabRun(model, hidden, init, args.impl)
        assert len(book.vocab) == len(ours.data.vocab), "both sides must see the same 28-token vocabulary"
        mem = {"book": 0.0, "rnnlab": 0.0}
        done, ceilings = 0, []
        while done < args.epochs:
            n = min(args.chunk, args.epochs - done)
            for side, run in (("book", book), ("rnnlab", ours)):
                reset_peak_rss()
                run.epochs(n)
                mem[side] = max(mem[side], peak_rss_mb())
            ceilings.append(product_ceiling(model, hidden, len(book.vocab)))  # in step with the machine's load
            done += n
        fpt = flops_per_token(model, hidden, len(book.vocab))
        b_tps, r_tps = statistics.median(book.speeds), statistics.median(ours.speeds)
        ceiling = statistics.median(ceilings)
        rows.append((name, b_tps, r_tps, book.ppl, ours.ppl, tail_ppl(book.ppls), tail_ppl(ours.ppls), mem["book"],
                     mem["rnnlab"], b_tps * fpt / 1e9, r_tps * fpt / 1e9, ceiling))
        print(f"{name}: book {b_tps:,.0f} tok/s ppl {book.ppl:.3f} | rnnlab {r_tps:,.0f} tok/s "
              f"ppl {ours.ppl:.3f} | x{r_tps / b_tps:.2f} | products-only ceiling {ceiling:,.0f} tok/s "
              f"(x{ceiling / b_tps:.2f})", flush=True)
        gb = statistics.median(book.generate("time traveller", args.gen_chars) for _ in range(3))
        go = statistics.median(ours.generate("time traveller", args.gen_chars) for _ in range(3))
        g8 = statistics.median(ours.generate("time traveller", args.gen_chars, 8) for _ in range(3))
        gen_rows.append((name, gb, go, g8))

    print()
    print(f"Training, B=32 T=35 lr 1 clip 1, {args.epochs} epochs per side, rnnlab --impl {args.impl}; "
          f"large-GEMM rate {peak:.0f} GFLOP/s")
    head = (f"{'config':<16} {'book tok/s':>11} {'rnnlab tok/s':>12} {'ratio':>6} {'target':>6} "
            f"{'book ppl':>8} {'rnnlab ppl':>10} {'book ppl~':>9} {'rnnlab ppl~':>11} {'book MB':>8} {'rnnlab MB':>9} "
            f"{'book GF/s':>9} {'rnnlab GF/s':>11} {'% of GEMM':>9} {'ceiling tok/s':>13} {'ceil/book':>9}")
    print(head)
    print("-" * len(head))
    for name, b, r, bp, rp, bpt, rpt, bm, rm, bg, rg, ceil in rows:
        print(f"{name:<16} {b:>11,.0f} {r:>12,.0f} {r / b:>5.2f}x {TARGETS[name]:>5.1f}x {bp:>8.3f} {rp:>10.3f} "
              f"{bpt:>9.3f} {rpt:>11.3f} "
              f"{bm:>8.0f} {rm:>9.0f} {bg:>9.1f} {rg:>11.1f} {100 * rg / peak:>8.0f}% {ceil:>13,.0f} {ceil / b:>8.2f}x")
    print("ppl~: median training perplexity of the last 10% of epochs (the final epoch's can sit on a spike)")
    print("ceiling: tokens/s if the minibatch's matrix products (each timed alone, torch.mm or oneDNN) were the only "
          "cost; a target above ceil/book cannot be met by any implementation of the same maths on this machine")
    print()
    print(f"Generation, greedy from 'time traveller', {args.gen_chars} characters (median of 3)")
    head = f"{'config':<16} {'predict_ch8 ch/s':>16} {'rnnlab ch/s':>12} {'ratio':>6} {'rnnlab x8 ch/s':>15} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for name, gb, go, g8 in gen_rows:
        print(f"{name:<16} {gb:>16,.0f} {go:>12,.0f} {go / gb:>5.1f}x {g8:>15,.0f} {g8 / gb:>5.1f}x")


if __name__ == "__main__":
    from machine import describe  # benchmarks/machine.py: CPU, flags, GEMM rate

    print(describe(), flush=True)
    main()
