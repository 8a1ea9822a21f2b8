"""``rnnlab`` command line: parses flags into config dataclasses and calls the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .config import IMPLS, MODELS, OPTIMIZERS, PRESETS, SAMPLINGS, TOKENS, DataConfig, ModelConfig, TrainConfig
from .errors import RnnlabError


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a language model on a text file or a named dataset",
                       description="Train an RNN/GRU/LSTM language model; writes metrics.jsonl and a checkpoint to --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("file", nargs="?", help="a UTF-8 text file (default: --dataset timemachine)")
    d.add_argument("--dataset", help="a named dataset: timemachine, tinyshakespeare, jaychou, nietzsche")
    d.add_argument("--preset", choices=PRESETS, default="raw", help="raw: every character; letters: the book's a-z + space")
    d.add_argument("--token", choices=TOKENS, default="char", help="tokens are characters or whitespace-separated words")
    d.add_argument("--max-tokens", type=int, default=0, help="keep the first N tokens (0 = all; the book uses 10000)")
    d.add_argument("--min-freq", type=int, default=0, help="drop tokens seen fewer times (they become <unk>)")
    d.add_argument("--encoding", default="utf-8", help="text encoding of FILE")
    d.add_argument("--errors", choices=("strict", "replace"), default="strict", help="what to do with undecodable bytes")
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=MODELS, default="rnn")
    m.add_argument("--impl", choices=IMPLS, default="concise", help="scratch: explicit parameters; concise: torch.nn layers")
    m.add_argument("--hidden-size", type=int, default=256)
    m.add_argument("--num-layers", type=int, default=1)
    m.add_argument("--embedding-dim", type=int, default=0, help="learned embedding size (0 = one-hot inputs)")
    m.add_argument("--dropout", type=float, default=0.0)
    m.add_argument("--activation", choices=("tanh", "relu"), default="tanh", help="RNN only")
    m.add_argument("--init", choices=("auto", "normal", "torch"), default="auto",
                   help="auto: N(0,0.01^2) for scratch (the book), torch's default for concise")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--num-steps", type=int, default=35, help="time steps per minibatch (BPTT length)")
    t.add_argument("--sampling", choices=SAMPLINGS, default="sequential")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    t.add_argument("--lr", type=float, default=1.0)
    t.add_argument("--clip-norm", type=float, default=1.0, help="clip gradients to this global norm (0 = off)")
    t.add_argument("--epochs", type=int, default=500)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    t.add_argument("--out", default="runs/latest", help="run directory: metrics.jsonl and the checkpoint")
    t.add_argument("--prefix", action="append", dest="prefixes", metavar="TEXT",
                   help="prefix for progress samples (repeatable; default: the dataset's)")
    t.add_argument("--predict-every", type=int, default=50, help="greedy samples every N epochs (0 = never)")
    t.add_argument("--predict-length", type=int, default=50)
    t.add_argument("--log-every", type=int, default=10, help="print a metrics line every N epochs")
    p.set_defaults(func=cmd_train)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint",
                       description="Warm up on --prefix, then continue it (greedy by default).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    p.add_argument("--prefix", default="time traveller", help="text to continue")
    p.add_argument("--length", type=int, default=100, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the book); >0 samples")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnlab", description="Character and word RNN language models.")
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_generate(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import train_run

    dataset = args.dataset if args.dataset or args.file else "timemachine"
    if args.dataset and args.file:
        raise RnnlabError("give either a text FILE or --dataset NAME, not both", exit_code=2)
    dcfg = DataConfig(path=args.file, dataset=dataset, preset=args.preset, token=args.token,
                      max_tokens=args.max_tokens, encoding=args.encoding, min_freq=args.min_freq)
    mcfg = ModelConfig(model=args.model, impl=args.impl, hidden_size=args.hidden_size, num_layers=args.num_layers,
                       embedding_dim=args.embedding_dim, dropout=args.dropout, activation=args.activation,
                       init=args.init)
    tcfg = TrainConfig(batch_size=args.batch_size, num_steps=args.num_steps, sampling=args.sampling,
                       optimizer=args.optimizer, lr=args.lr, clip_norm=args.clip_norm, epochs=args.epochs,
                       seed=args.seed, device=args.device, predict_every=args.predict_every,
                       prefixes=args.prefixes or [], predict_length=args.predict_length)
    if args.log_every <= 0:
        raise RnnlabError(f"--log-every must be a positive integer, got {args.log_every}", exit_code=2)
    train_run(dcfg, mcfg, tcfg, args.out, errors=args.errors, log_every=args.log_every)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_checkpoint
    from .runtime import select_device
    from .sampling import generate

    if args.length < 0:
        raise RnnlabError(f"--length must be >= 0, got {args.length}", exit_code=2)
    if args.temperature < 0:
        raise RnnlabError(f"--temperature must be >= 0, got {args.temperature}", exit_code=2)
    if not 0 < args.top_p <= 1:
        raise RnnlabError(f"--top-p must be in (0, 1], got {args.top_p}", exit_code=2)
    if args.top_k < 0:
        raise RnnlabError(f"--top-k must be >= 0, got {args.top_k}", exit_code=2)
    ckpt = load_checkpoint(args.checkpoint, select_device(args.device))
    if not args.prefix:
        raise RnnlabError("--prefix is empty; give some text to continue", exit_code=2)
    if ckpt.data_config.preset == "letters":
        from .data.corpus import preprocess
        args.prefix = preprocess(args.prefix, "letters") or args.prefix
    gen = None
    if args.seed is not None:
        gen = torch.Generator(device=ckpt.model.device).manual_seed(args.seed)
    text = generate(ckpt.model, ckpt.vocab, args.prefix, args.length, args.temperature, args.top_k, args.top_p, gen)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RnnlabError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
