"""Held-out loss on Tiny Shakespeare after S seconds, through the product's own path.

Runs ``rnnlab train --dataset tinyshakespeare --budget S --val-fraction 0.1`` (the default recipe,
nanoGPT's split: the last 10% held out) and prints ``val_loss=<nats per char>`` as its last line:
the loss the run reports on the whole held-out split at the end (lower is better; nanoGPT's CPU
recipe reaches 1.886 in 141 s on a 2-core machine).

    RNNLAB_DATA_DIR=../shared/data python benchmarks/shakespeare.py --seconds 141
    python benchmarks/shakespeare.py --seconds 900 --out runs/shakespeare-900
    python benchmarks/shakespeare.py --seconds 141 -- --hidden-size 384 --lr 5e-3   # override the recipe

There is no second training loop here: what is timed is what a user gets.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from budget import train  # benchmarks/budget.py: one `rnnlab train` run and its held-out loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=141.0, help="the time budget (rnnlab train --budget)")
    p.add_argument("--out", type=Path, default=None, help="keep the run here (default: a temporary directory)")
    p.add_argument("extra", nargs="*", help="more rnnlab train flags, after --")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="rnnlab-shakespeare-")) / "run"
    r = train("tinyshakespeare", args.seconds, out, args.extra)
    print(r["plan"])
    print(f"trained and scored in {r['wall']:.0f} s (budget {args.seconds:g} s); run in {out}")
    print(f"val_loss={r['val_loss']:.4f}")


if __name__ == "__main__":
    from machine import describe  # benchmarks/machine.py: CPU, flags, GEMM rate

    print(describe(), flush=True)
    main()
