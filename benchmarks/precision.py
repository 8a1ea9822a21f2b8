"""float32 against bfloat16 (``--precision``), measured on this machine, three ways:

* training (default): tokens/s of the real training step (``rnnlab.speed.step_rates``: embedding,
  the cell, the output layer, Adam, clipping) for each cell and implementation at a few sizes, the
  precisions taking turns step by step in one process (``--rounds`` rounds, medians), plus the
  products of a minGRU-style block over 16k rows and the issue's nn.LSTM rows;
* ``--inference DIR``: a trained character model's per-query suggestion latency, generation
  tokens/s (greedy and sampled), held-out loss and keystroke savings in fp32, bf16 and the int8
  copy (``--int8``), the three taking turns query by query; the last line says which is fastest
  while keeping keystroke savings within ``--ksr-tol`` (0.005) of float32's;
* ``--budgets S ...``: held-out loss after equal budgets through the product, ``rnnlab train
  --dataset NAME --budget S --val-fraction 0.1 --precision P`` for each precision, one run at a time.

The first line names the machine (CPU, its bfloat16/AMX flags, the GEMM rates: ``machine.py``).

    python benchmarks/precision.py                          # training tokens/s, every cell, a few sizes
    python benchmarks/precision.py --cells lstm --sizes 256 384 512 --rounds 5
    python benchmarks/precision.py --inference runs/tm --words 1000
    RNNLAB_DATA_DIR=../shared/data python benchmarks/precision.py --budgets 141 900 --datasets tinyshakespeare

Long runs: the lead schedules them on an idle machine (``--budgets`` takes 2 x the budgets).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

PRECISIONS = ("fp32", "bf16")


def _k(x: float) -> str:
    return f"{x / 1000:,.1f}k" if x >= 1000 else f"{x:,.0f}"


# -- training ---------------------------------------------------------------------------------------
def median_rates(mcfg, tcfg, rounds: int, seconds: float) -> tuple[float, float, int]:
    """(float32 tokens/s, bfloat16 tokens/s, parameters): the medians of ``rounds`` measurements of
    the training step, the two precisions taking turns step by step in each."""
    from rnnlab.speed import step_rates

    got: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(rounds):
        rates, params = step_rates(mcfg, tcfg, torch.device("cpu"), seconds=seconds, precisions=PRECISIONS)
        for p in PRECISIONS:
            got[p].append(rates[p])
    fp32, bf16 = (statistics.median(got[p]) for p in PRECISIONS)
    return fp32, bf16, params


def training_rows(cells: list[str], sizes: list[int], min_sizes: list[int], rounds: int, seconds: float,
                  batch: int, steps: int, vocab: int) -> list[dict]:
    from rnnlab.config import TrainConfig
    from rnnlab.models import ModelConfig, precision_notes
    from rnnlab.models.cells import get_cell

    tcfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=batch, num_steps=steps)
    rows = []
    for name in cells:
        cell = get_cell(name)
        for impl in [i for i in ("fast", "concise") if i in cell.impls]:
            for size in (min_sizes if cell.width_is_embedding else sizes):
                layers = 2 if cell.width_is_embedding else 1
                mcfg = ModelConfig(model=name, impl=impl, hidden_size=size, num_layers=layers, vocab_size=vocab,
                                   embedding_dim=size if cell.width_is_embedding else 64)
                fp32, bf16, params = median_rates(mcfg, tcfg, rounds, seconds)
                note = precision_notes(mcfg, "cpu")
                row = {"cell": name, "impl": impl, "size": size, "layers": layers, "params": params, "fp32": fp32,
                       "bf16": bf16, "gain": bf16 / fp32, "float32_parts": note[0] if note else ""}
                rows.append(row)
                print(f"| {name} | {impl} | {size} x {layers} | {params:,} | {_k(fp32)} | {_k(bf16)} | "
                      f"**{row['gain']:.2f}x** |", flush=True)
    return rows


def lstm_rows(rounds: int, seconds: float) -> list[dict]:
    """The issue's rows: nn.LSTM (the fused kernel), embedding 64, Adam, T=64, at (H, B)."""
    from rnnlab.config import TrainConfig
    from rnnlab.models import ModelConfig

    rows = []
    for hidden, batch in ((256, 16), (384, 16), (512, 64)):
        mcfg = ModelConfig(model="lstm", impl="concise", hidden_size=hidden, embedding_dim=64, vocab_size=65)
        tcfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=batch, num_steps=64)
        fp32, bf16, _ = median_rates(mcfg, tcfg, rounds, seconds)
        rows.append({"work": f"nn.LSTM train step, embedding 64 + Adam, H={hidden}, B={batch}, T=64", "fp32": fp32,
                     "bf16": bf16})
        print(f"| nn.LSTM train step, embedding 64 + Adam, H={hidden}, B={batch}, T=64 | {_k(fp32)} tokens/s | "
              f"{_k(bf16)} | {bf16 / fp32:.2f}x |", flush=True)
    return rows


def block_products(dims=(152, 512), rows: int = 16384, reps: int = 5) -> list[dict]:
    """The all-rows products of a minGRU-style block (in_proj D -> 2D, out_proj D -> D, MLP D -> 2D -> D)
    over ``rows`` rows, forward and backward, float32 against bfloat16 autocast (taking turns)."""
    out = []
    for d in dims:
        layers = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d), torch.nn.Linear(d, 2 * d),
                                     torch.nn.Linear(2 * d, d))
        x = torch.randn(rows, d)
        times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for r in range(reps + 1):
            for p in PRECISIONS:
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bf16"):
                    y = layers(x)
                y.float().sum().backward()
                if r:
                    times[p].append(time.perf_counter() - t0)
        fp32, bf16 = (statistics.median(times[p]) for p in PRECISIONS)
        out.append({"work": f"all-rows products (minGRU-style block), D={d}, {rows // 1024}k rows",
                    "gain": fp32 / bf16})
        print(f"| all-rows products (minGRU-style block), D={d}, {rows // 1024}k rows | | | {fp32 / bf16:.2f}x |",
              flush=True)
    return out


# -- inference --------------------------------------------------------------------------------------
def inference(ckpt: str, queries: int, words: int, length: int, ksr_tol: float) -> dict:
    from rnnlab.checkpoint import load_for_inference
    from rnnlab.config import GenerateConfig, KeyboardEval, SuggestConfig
    from rnnlab.decoding import generate_text
    from rnnlab.keyboard.run import evaluate_keyboards, keyboard_texts
    from rnnlab.pipeline import evaluate_checkpoint
    from rnnlab.suggest import SuggestEngine, SuggestRequest

    kinds = {"fp32": dict(int8=False, precision="fp32"), "bf16": dict(int8=False, precision="bf16"),
             "int8": dict(int8=True, precision="fp32")}
    cks = {k: load_for_inference(ckpt, "cpu", **kw) for k, kw in kinds.items()}
    base = cks["fp32"]
    print(f"model: {base.model.describe()} H={base.model_config.hidden_size} x {base.model_config.num_layers}, "
          f"{sum(p.numel() for p in base.model.parameters()):,} parameters, vocabulary {len(base.vocab)}", flush=True)
    _, typed, history, _ = keyboard_texts(base.data_config, None)
    # queries: the text typed so far at points spread over the held-out text (inside and after words)
    stride = max(1, (len(typed) - 200) // max(queries, 1))
    texts = [history[-300:] + typed[:200 + i * stride][-300:] for i in range(queries)]
    engines = {k: SuggestEngine(ck.model, ck.tokenizer, SuggestConfig()) for k, ck in cks.items()}
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    for i, text in enumerate(texts):  # every query in each kind, taking turns; a fresh client each: no cache hits
        for k, engine in engines.items():
            t0 = time.perf_counter()
            engine.suggest_batch([SuggestRequest(text, 5, client=f"q{i}")])
            lat[k].append(time.perf_counter() - t0)
    gen: dict[str, dict[str, list[float]]] = {k: {"greedy": [], "sampled": []} for k in kinds}
    for r in range(4):
        for k, ck in cks.items():
            for mode, temp in (("greedy", 0.0), ("sampled", 0.8)):
                g = torch.Generator().manual_seed(r)
                t0 = time.perf_counter()
                generate_text(ck.model, ck.tokenizer, typed[:40], GenerateConfig(length=length, temperature=temp), g)
                if r:
                    gen[k][mode].append(length / (time.perf_counter() - t0))
    loss = {k: evaluate_checkpoint(ckpt, device="cpu", **({"int8": True} if k == "int8" else {"precision": k}))["loss"]
            for k in kinds}
    settings = KeyboardEval(words=words, mix="off")
    ksr = {}
    for k, kw in kinds.items():
        report = evaluate_keyboards(ckpt, None, settings, "cpu", **kw)
        ksr[k] = next(iter(report["keyboards"].values()))["ksr"]
    rows = {}
    print(f"| | {' | '.join(kinds)} |\n|---|---|---|---|")
    for label, get, fmt in (("suggestion latency, median ms", lambda k: 1000 * statistics.median(lat[k]), ".2f"),
                            ("suggestion latency, p90 ms", lambda k: 1000 * sorted(lat[k])[int(0.9 * len(lat[k]))],
                             ".2f"),
                            ("generation tokens/s, greedy", lambda k: statistics.median(gen[k]["greedy"]), ",.0f"),
                            ("generation tokens/s, sampled T=0.8", lambda k: statistics.median(gen[k]["sampled"]),
                             ",.0f"),
                            ("held-out loss", lambda k: loss[k], ".4f")):
        rows[label] = {k: get(k) for k in kinds}
        print(f"| {label} | " + " | ".join(f"{v:{fmt}}" for v in rows[label].values()) + " |", flush=True)
    for kk in ksr["fp32"]:
        rows[f"keystroke savings @{kk}"] = {k: ksr[k][kk] for k in kinds}
        print(f"| keystroke savings @{kk} | " + " | ".join(f"{ksr[k][kk]:.3f}" for k in kinds) + " |")
    keeps = [k for k in kinds if all(abs(ksr[k][kk] - ksr["fp32"][kk]) <= ksr_tol for kk in ksr["fp32"])]
    fastest = min(keeps, key=lambda k: statistics.median(lat[k]))
    print(f"fastest suggestions with keystroke savings within {ksr_tol} of float32 at every k: {fastest} "
          f"(keeping quality: {', '.join(keeps)})", flush=True)
    return {"rows": rows, "keeps_quality": keeps, "fastest": fastest, "queries": len(texts), "words": words}


# -- equal budgets -----------------------------------------------------------------------------------
def budgets(datasets: list[str], seconds: list[float], precisions: list[str], keep: Path | None,
            extra: list[str]) -> list[dict]:
    import tempfile

    from budget import train

    root = keep or Path(tempfile.mkdtemp(prefix="rnnlab-precision-"))
    results = []
    for dataset in datasets:
        for budget in seconds:
            for p in precisions:
                r = train(dataset, budget, root / f"{dataset}-{budget:g}-{p}", ["--precision", p, *extra])
                r["precision"] = p
                config = json.loads((Path(r["out"]) / "config.json").read_text())
                r["hidden"] = config["model"]["hidden_size"]
                metrics = (Path(r["out"]) / "metrics.jsonl").read_text().splitlines()
                r["median_tokens_per_s"] = statistics.median(json.loads(x)["tokens_per_sec"] for x in metrics)
                results.append(r)
                print(f"{dataset:16s} {budget:5g} s  {p}  held-out loss {r['val_loss']:.4f}  H={r['hidden']}  "
                      f"{r['median_tokens_per_s']:,.0f} tokens/s  (wall {r['wall']:.0f} s)  [{r['plan']}]", flush=True)
    return results


def main() -> None:
    from rnnlab.models.cells import cell_names

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", default=list(cell_names()))
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512], help="hidden sizes of rnn/gru/lstm")
    ap.add_argument("--min-sizes", nargs="+", type=int, default=[152, 512], help="widths of the min-cells (2 layers)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-steps", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="measurements per row (median)")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed steps per precision per round")
    ap.add_argument("--inference", metavar="DIR", help="a trained character model: latency, tokens/s, keystrokes")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--words", type=int, default=1000, help="held-out words the simulated typist types")
    ap.add_argument("--length", type=int, default=300, help="tokens per generation")
    ap.add_argument("--ksr-tol", type=float, default=0.005)
    ap.add_argument("--budgets", nargs="+", type=float, metavar="S", help="held-out loss at equal budgets instead")
    ap.add_argument("--datasets", nargs="+", default=["tinyshakespeare"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "auto"))
    ap.add_argument("--keep", type=Path, help="keep the --budgets run directories here")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("extra", nargs="*", help="more rnnlab train flags for --budgets, after --")
    args = ap.parse_args()
    from machine import describe

    print(describe(), flush=True)
    if args.budgets:
        result = {"budgets": budgets(args.datasets, args.budgets, args.precisions, args.keep, args.extra)}
    elif args.inference:
        result = {"inference": inference(args.inference, args.queries, args.words, args.length, args.ksr_tol)}
    else:
        print(f"training step, B={args.batch_size}, T={args.num_steps}, Adam, medians of {args.rounds} rounds; "
              f"float32 and bfloat16 autocast taking turns\n\n| cell | impl | width x layers | params | float32 "
              f"tokens/s | bfloat16 | gain |\n|---|---|---|---|---|---|---|", flush=True)
        rows = training_rows(args.cells, args.sizes, args.min_sizes, args.rounds, args.seconds, args.batch_size,
                             args.num_steps, 65)
        notes = {f"{r['cell']} {r['impl']}": r["float32_parts"] for r in rows if r["float32_parts"]}
        print("\nfloat32 under bf16:\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items()), flush=True)
        print("\n| work | float32 | bfloat16 autocast | gain |\n|---|---|---|---|", flush=True)
        result = {"training": rows, "issue_rows": lstm_rows(args.rounds, args.seconds) + block_products()}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
