"""Training speed of the recurrent cells at equal parameter counts, alternating in one process.

Each model trains on random tokens (B x T minibatches, Adam, the state carried) as `rnnlab train`
does: forward, loss, backward, clipping, optimizer step. Models take turns, ``--rounds`` rounds of
``--steps`` timed steps each (after a warm-up), so a noisy machine slows all of them alike; the
median tokens/s per model is reported with its ratio to the fused ``nn.LSTM`` and its achieved
GFLOP/s (6 x the multiply-accumulates of its weight matrices per token: forward 2, backward 4)
against a 2048^3 float32 matrix product timed between the rounds.

    python benchmarks/cells.py                      # B=64, T=64 and T=256
    python benchmarks/cells.py --seq 64 --rounds 3 --steps 10 --json out.json

Sizes: the LSTM and GRU are one layer (H=256 and 288, embedding 64, V=65, tinyshakespeare's
vocabulary); minGRU/minLSTM are two blocks of width D chosen so the parameter counts match the
LSTM's within a few percent (printed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.nn import functional as F

from rnnlab.config import ModelConfig
from rnnlab.models import build_model, detach_state

V = 65


def configs() -> dict[str, ModelConfig]:
    base = dict(vocab_size=V)
    out = {"nn.LSTM (fused)": ModelConfig(model="lstm", impl="concise", hidden_size=256, embedding_dim=64, **base),
           "nn.GRU": ModelConfig(model="gru", impl="concise", hidden_size=288, embedding_dim=64, **base)}
    target = n_params(out["nn.LSTM (fused)"])
    for cell in ("mingru", "minlstm"):
        best = min(range(64, 400, 8), key=lambda d: abs(n_params(ModelConfig(
            model=cell, impl="fast", hidden_size=d, embedding_dim=d, num_layers=2, **base)) - target))
        out[cell] = ModelConfig(model=cell, impl="fast", hidden_size=best, embedding_dim=best, num_layers=2, **base)
    return out


def n_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg).parameters())


def matmul_macs(model) -> int:
    """Multiply-accumulates per token of the model's weight matrices (the embedding is a lookup)."""
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("embedding"))


def gemm_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


class Runner:
    def __init__(self, cfg: ModelConfig, batch: int, seq: int, seed: int = 0):
        torch.manual_seed(seed)
        self.model = build_model(cfg).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batch, self.seq = batch, seq
        self.gen = torch.Generator().manual_seed(seed)
        self.state = self.model.begin_state(batch)
        self.speeds: list[float] = []

    def steps(self, n: int) -> float:
        """Seconds for ``n`` training steps."""
        t0 = time.perf_counter()
        for _ in range(n):
            x = torch.randint(0, V, (self.batch, self.seq + 1), generator=self.gen)
            logits, self.state = self.model(x[:, :-1], detach_state(self.state))
            loss = F.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
        return time.perf_counter() - t0


def measure(seq: int, batch: int, rounds: int, steps: int) -> dict:
    cfgs = configs()
    runners = {name: Runner(cfg, batch, seq) for name, cfg in cfgs.items()}
    for r in runners.values():
        r.steps(2)  # warm-up (allocations, oneDNN primitives)
    gemms = []
    for _ in range(rounds):
        gemms.append(gemm_gflops())
        for r in runners.values():
            r.speeds.append(steps * batch * seq / r.steps(steps))
    gemm = statistics.median(gemms)
    ref = statistics.median(runners["nn.LSTM (fused)"].speeds)
    rows = []
    for name, r in runners.items():
        tps = statistics.median(r.speeds)
        gflops = 6 * matmul_macs(r.model) * tps / 1e9
        rows.append({"model": name, "params": n_params(cfgs[name]), "width": cfgs[name].hidden_size,
                     "layers": cfgs[name].num_layers, "tokens_per_s": round(tps), "vs_lstm": round(tps / ref, 2),
                     "gflops": round(gflops, 1), "pct_of_gemm": round(100 * gflops / gemm, 1),
                     "spread": [round(min(r.speeds)), round(max(r.speeds))]})
    return {"batch": batch, "seq": seq, "gemm_gflops": round(gemm, 1), "threads": torch.get_num_threads(), "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq", type=int, nargs="*", default=[64, 256])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    results = []
    for seq in a.seq:
        res = measure(seq, a.batch, a.rounds, a.steps)
        results.append(res)
        print(f"B={res['batch']} T={seq}, {res['threads']} threads, 2048^3 GEMM {res['gemm_gflops']} GFLOP/s")
        print(f"  {'model':<16} {'params':>8} {'width':>5} {'layers':>6} {'tokens/s':>9} {'x LSTM':>7} "
              f"{'GFLOP/s':>8} {'% GEMM':>7}  min-max tokens/s")
        for r in res["rows"]:
            print(f"  {r['model']:<16} {r['params']:>8,} {r['width']:>5} {r['layers']:>6} {r['tokens_per_s']:>9,} "
                  f"{r['vs_lstm']:>7} {r['gflops']:>8} {r['pct_of_gemm']:>7}  {r['spread'][0]:,}-{r['spread'][1]:,}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    from machine import describe  # benchmarks/machine.py: CPU, flags, GEMM rate

    print(describe(), flush=True)
    main()
