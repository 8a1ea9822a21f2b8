"""Held-out loss by time budget, through the product: ``rnnlab train --dataset NAME --budget S``.

Each run is the command a user types, with no other flag than the split (nanoGPT's: the last 10%
held out, ``--val-fraction 0.1``); the figure is the loss the run itself reports on the whole
held-out split at the end ("validation loss ..."), in nats per token. Runs go one after another
(never two at once: a concurrent job halves what a budget buys).

    RNNLAB_DATA_DIR=../shared/data python benchmarks/budget.py                     # 3 corpora x 141/300/900 s
    python benchmarks/budget.py --datasets tinyshakespeare --budgets 141 900 --dynamic
    python benchmarks/budget.py --finetune      # base 300 s on tinyshakespeare, 60 s on timemachine vs scratch
    python benchmarks/budget.py --speed         # the recipe's speed table (tokens/s by hidden size)

``--dynamic`` also scores each run's held-out text with ``rnnlab eval --dynamic``. ``--keep DIR``
keeps the run directories (the keyboard benchmark uses the 300 s ones). Prints one line per run and
a JSON summary as the last line.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VAL = re.compile(r"validation loss ([0-9.]+|inf|nan)")
PLAN = re.compile(r"(recipe \w+: .*)")
DYN = re.compile(r"dynamic[^\n]*?loss ([0-9.]+)")


def rnnlab(*args: str) -> str:
    """Run the CLI; return its stderr and stdout together (rnnlab logs on stderr)."""
    proc = subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"rnnlab {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stderr + proc.stdout


def train(dataset: str, budget: float, out: Path, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    log = rnnlab("train", "--dataset", dataset, "--budget", f"{budget:g}s", "--val-fraction", "0.1",
                 "--out", str(out), "--overwrite", *extra)
    found = VAL.findall(log)
    plan = PLAN.search(log)
    return {"dataset": dataset, "budget": budget, "val_loss": float(found[-1]) if found else None,
            "wall": round(time.perf_counter() - t0, 1), "plan": plan.group(1) if plan else "", "out": str(out)}


def dynamic(run: dict) -> float | None:
    log = rnnlab("eval", run["out"], "--dynamic")
    found = DYN.findall(log)
    return float(found[-1]) if found else None


def speed_table() -> dict:
    """Training tokens/s of the default recipe's LSTM by hidden size (B=16, T=64, 65 characters)."""
    import torch

    from rnnlab.models import build_model
    from rnnlab.models.config import ModelConfig
    from rnnlab.runtime import gemm_rate

    torch.manual_seed(0)
    V, B, T = 65, 16, 64
    table = {"gemm_gflops": round(gemm_rate(), 1)}
    for H in (128, 192, 256, 384, 512):
        model = build_model(ModelConfig(model="lstm", impl="fast", hidden_size=H, embedding_dim=64, vocab_size=V))
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))

        def step():
            logits, _ = model(x)  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        times = []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(3):
                step()
            times.append((time.perf_counter() - t) / 3)
        table[H] = round(B * T / sorted(times)[len(times) // 2])
        print(f"hidden {H}: {table[H]:,} tokens/s", flush=True)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["tinyshakespeare", "timemachine", "jaychou"])
    ap.add_argument("--budgets", nargs="+", type=float, default=[141, 300, 900])
    ap.add_argument("--dynamic", action="store_true", help="also report rnnlab eval --dynamic")
    ap.add_argument("--finetune", action="store_true", help="the fine-tuning comparison instead")
    ap.add_argument("--speed", action="store_true", help="the recipe's speed table instead")
    ap.add_argument("--keep", type=Path, help="keep run directories here")
    ap.add_argument("extra", nargs="*", help="more rnnlab train flags, after --")
    args = ap.parse_args()
    if args.speed:
        print(json.dumps(speed_table()))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="rnnlab-budget-"))
    results = []
    if args.finetune:
        base = train("tinyshakespeare", 300, root / "ft-base", args.extra)
        print(f"base tinyshakespeare 300 s: {base['val_loss']:.4f}", flush=True)
        for name, flags in (("scratch", []), ("fine-tuned", ["--init-from", base["out"]])):
            r = train("timemachine", 60, root / f"ft-{name}", args.extra + flags)
            r["run"] = name
            results.append(r)
            print(f"timemachine 60 s {name}: held-out loss {r['val_loss']:.4f}  [{r['plan']}]", flush=True)
    else:
        for dataset in args.datasets:
            for budget in args.budgets:
                r = train(dataset, budget, root / f"{dataset}-{budget:g}", args.extra)
                if args.dynamic:
                    r["dynamic_loss"] = dynamic(r)
                results.append(r)
                dyn = f"  dynamic {r['dynamic_loss']:.4f}" if r.get("dynamic_loss") else ""
                print(f"{dataset:16s} {budget:5g} s  held-out loss {r['val_loss']:.4f}{dyn}  "
                      f"(wall {r['wall']:.0f} s)  [{r['plan']}]", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
