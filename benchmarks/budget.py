"""Held-out loss by time budget, through the product: ``rnnlab train --dataset NAME --budget S``.

Each run is the command a user types, with no other flag than the split (nanoGPT's: the last 10%
held out, ``--val-fraction 0.1``; the recipe takes its selection slice from the first 5%); the
figure is the loss the run itself reports on the whole test split at the end ("test loss ..."), in
nats per token: text no decision of the run saw. Runs go one after another (never two at once: a
concurrent job halves what a budget buys). The first line names the machine (CPU, flags, GEMM rate).

    RNNLAB_DATA_DIR=../shared/data python benchmarks/budget.py                     # 3 corpora x 141/300/900 s
    python benchmarks/budget.py --datasets tinyshakespeare --budgets 141 900 --dynamic
    python benchmarks/budget.py --finetune      # base 300 s on tinyshakespeare, 60 s on timemachine vs scratch
    python benchmarks/budget.py --datasets tinyshakespeare --budgets 141 --spread 5   # same command, same model?

``--dynamic`` also scores each run's held-out text with ``rnnlab eval --dynamic``. ``--keep DIR``
keeps the run directories (the keyboard benchmark uses the 300 s ones). Prints one line per run and
a JSON summary as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VAL = re.compile(r"test loss ([0-9.]+|inf|nan)")
PLAN = re.compile(r"(recipe \w+: .*)")
RATES = re.compile(r"(measured training tokens/s .*)")
DYN = re.compile(r"dynamic[^\n]*?loss ([0-9.]+)")


def rnnlab(*args: str, env: dict | None = None) -> str:
    """Run the CLI; return its stderr and stdout together (rnnlab logs on stderr)."""
    proc = subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})
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


def spread(dataset: str, budget: float, runs: int, extra: list[str]) -> dict:
    """The plan the default recipe settles for the same command ``runs`` times in a row
    (``rnnlab train ... --dry-run``: the measured speeds and the model they choose, nothing trained),
    twice: as a user gets it, starting from an empty book of remembered speeds (the first run
    measures, the others reuse its rates), and with ``--remeasure`` every time (how much a fresh
    measurement alone wanders on this machine)."""
    book = Path(tempfile.mkdtemp(prefix="rnnlab-speed-")) / "speed.json"
    result = {}
    for mode, flags in (("as a user runs it", []), ("--remeasure every run", ["--remeasure"])):
        rows = []
        for k in range(runs):
            log = rnnlab("train", "--dataset", dataset, "--budget", f"{budget:g}s", "--val-fraction", "0.1",
                         "--dry-run", *flags, *extra, env={"RNNLAB_SPEED_FILE": str(book)})
            rates = RATES.search(log)
            hidden = re.search(r"--hidden-size (\d+)", log)
            drop = re.search(r"--dropout ([0-9.]+)", log)
            row = {"run": k + 1, "hidden": int(hidden.group(1)) if hidden else None,
                   "dropout": float(drop.group(1)) if drop else None, "measured": rates.group(1) if rates else ""}
            print(f"  {mode}, run {k + 1}: hidden {row['hidden']}, dropout {row['dropout']:g}; {row['measured']}",
                  flush=True)
            rows.append(row)
        same = len({(r["hidden"], r["dropout"]) for r in rows}) == 1
        print(f"  {mode}, {runs} runs: {'the same model every time' if same else 'the model DRIFTED'}", flush=True)
        result[mode] = {"same": same, "runs": rows}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["tinyshakespeare", "timemachine", "jaychou"])
    ap.add_argument("--budgets", nargs="+", type=float, default=[141, 300, 900])
    ap.add_argument("--dynamic", action="store_true", help="also report rnnlab eval --dynamic")
    ap.add_argument("--finetune", action="store_true", help="the fine-tuning comparison instead")
    ap.add_argument("--spread", type=int, metavar="N",
                    help="settle the same command N times (--dry-run): does the recipe choose the same model?")
    ap.add_argument("--keep", type=Path, help="keep run directories here")
    ap.add_argument("extra", nargs="*", help="more rnnlab train flags, after --")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import describe

    results = []
    print(describe(), flush=True)
    if args.spread:
        for dataset in args.datasets:
            for budget in args.budgets:
                print(f"{dataset} --budget {budget:g}s:", flush=True)
                results.append({"dataset": dataset, "budget": budget,
                                **spread(dataset, budget, args.spread, args.extra)})
        print(json.dumps(results))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="rnnlab-budget-"))
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
