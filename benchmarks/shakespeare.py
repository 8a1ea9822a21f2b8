"""Held-out quality per wall-clock second on Tiny Shakespeare, nanoGPT's split.

Trains rnnlab's recommended recipe for ``--seconds`` of wall time on the first 90% of the raw
characters and evaluates on the last 10% (nanoGPT's ``prepare.py`` split), then prints
``val_loss=<nats per char>`` as its last line (lower is better; nanoGPT's CPU recipe reaches 1.886
in 141 s on a 2-core machine).

    RNNLAB_DATA_DIR=../shared/data python benchmarks/shakespeare.py --seconds 141
    python benchmarks/shakespeare.py --seconds 900 --out runs/shakespeare-900

Any recipe flag can be overridden (``--hidden-size``, ``--lr``, ...); the defaults are the recipe
the README recommends. The learning rate follows a cosine schedule over the time budget, so a run
of S seconds is a complete run, not a truncated longer one.

What the budget covers: every optimizer step, from the first minibatch until ``--seconds`` of
wall time have passed (building the vocabulary and the model come before, a second or so). The
validation split is not looked at during training (no per-epoch evaluation eating the budget);
once training stops it is scored exactly once, in float32, whole and in order
(``rnnlab.training.evaluate``, ``--eval-batch`` rows of ``--eval-steps`` chunks with the state
carried), and that time is printed separately.
"""
from __future__ import annotations

import argparse
import copy
import math
import random
import time
from pathlib import Path

import torch

from rnnlab import DataConfig, ModelConfig, TrainConfig
from rnnlab.checkpoint import save_checkpoint
from rnnlab.data.batching import epoch_batches
from rnnlab.models import LanguageModel, build_model, detach_state
from rnnlab.data import prepare_data
from rnnlab.evaluation import evaluate
from rnnlab.runtime import seed_everything, select_device
from rnnlab.training import lm_loss, make_optimizer

RECIPE = dict(model="lstm", impl="concise", hidden_size=256, num_layers=1, embedding_dim=64, dropout=0.0,
              batch_size=64, num_steps=64, optimizer="adam", lr=7e-3, min_lr=1e-4, lr_schedule="cosine",
              warmup_steps=50, clip_norm=1.0, weight_decay=0.0)
MODEL_KEYS = ("model", "impl", "hidden_size", "num_layers", "embedding_dim", "dropout")


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine from ``lr`` to ``min_lr`` over the budget."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_for(model: LanguageModel, train_ids: torch.Tensor, cfg: TrainConfig, seconds: float,
              precision: str = "fp32") -> int:
    """Truncated BPTT on ``train_ids`` (sequential minibatches, state carried) until ``seconds`` of
    wall time have passed; returns the number of optimizer steps.

    ``precision="bf16"``: a bfloat16 copy of the model runs forward and backward (oneDNN's bf16
    kernels run about twice as fast as float32 on a CPU with avx512_bf16); ``model`` keeps the
    float32 weights, the gradients are copied up to it and the optimizer updates it, and the copy
    is refreshed before every step (the usual master-weights scheme).
    """
    runner = copy.deepcopy(model).to(torch.bfloat16) if precision == "bf16" else model
    pairs = list(zip(model.parameters(), runner.parameters()))
    opt = make_optimizer(model, cfg)
    rng = random.Random(cfg.seed)
    device = model.device
    runner.train()
    step, start = 0, time.perf_counter()
    while True:
        state = None
        for x, y in epoch_batches(train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, rng):
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return step
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, elapsed / seconds)
            if runner is not model:
                with torch.no_grad():
                    for master, low in pairs:
                        low.copy_(master)
            state = runner.begin_state(x.shape[0], device) if state is None else detach_state(state)
            logits, state = runner(x, state)  # (B, T, V)
            loss = lm_loss(logits.float(), y)
            loss.backward()
            if runner is not model:
                for master, low in pairs:
                    master.grad, low.grad = low.grad.float(), None
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=141.0, help="wall-time budget for training")
    p.add_argument("--out", default=None, help="also save the trained model as a checkpoint here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: train a bfloat16 copy against float32 master weights (evaluation is float32)")
    p.add_argument("--eval-batch", type=int, default=64, help="rows the validation split is cut into")
    p.add_argument("--eval-steps", type=int, default=256, help="chunk length when scoring the validation split")
    for k, v in RECIPE.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dcfg = DataConfig(dataset="tinyshakespeare", preset="raw", val_fraction=0.1)
    data = prepare_data(dcfg)
    mcfg = ModelConfig(vocab_size=len(data.vocab), **{k: getattr(args, k) for k in MODEL_KEYS})
    tcfg = TrainConfig(**{k: getattr(args, k) for k in RECIPE if k not in MODEL_KEYS}, seed=args.seed)
    tcfg.validate()
    device = select_device(args.device)
    seed_everything(args.seed)
    model = build_model(mcfg).to(device)
    n_params = sum(q.numel() for q in model.parameters())
    print(f"{len(data.train_ids):,} training / {len(data.val_ids):,} validation characters, vocabulary "
          f"{len(data.vocab)}; {model.describe()} with {n_params:,} parameters on {device}, "
          f"{torch.get_num_threads()} threads", flush=True)

    wall0 = time.perf_counter()
    steps = train_for(model, data.train_ids.to(device), tcfg, args.seconds, args.precision)
    wall = time.perf_counter() - wall0
    tokens = steps * args.batch_size * args.num_steps
    epochs = tokens / len(data.train_ids)
    t0 = time.perf_counter()
    val = evaluate(model, data.val_ids, args.eval_batch, args.eval_steps)
    eval_s = time.perf_counter() - t0
    if args.out:
        save_checkpoint(Path(args.out), model, data.tokenizer, mcfg, dcfg, tcfg, None,
                        info={"step": steps, "val_loss": val["loss"], "seconds": args.seconds})
    print("recipe: " + " ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in (*RECIPE, "precision")))
    print(f"trained {wall:.1f} s ({args.precision}): {steps} steps, {epochs:.2f} epochs, "
          f"{tokens / wall:,.0f} tokens/s; "
          f"validation scored in {eval_s:.1f} s: ppl {val['ppl']:.3f}, bpc {val['bpc']:.4f}")
    print(f"val_loss={val['loss']:.4f}")


if __name__ == "__main__":
    main()
