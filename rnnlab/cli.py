"""``rnnlab`` command line: parses flags into config dataclasses and calls the library."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import __version__
from .config import (IMPLS, MODELS, OPTIMIZERS, PRESETS, SAMPLINGS, SCHEDULES, TOKENS, DataConfig, ModelConfig,
                     TrainConfig)
from .errors import RnnlabError, UsageError

Formatter = argparse.ArgumentDefaultsHelpFormatter


def _add_data_source(p: argparse.ArgumentParser, file_help: str) -> None:
    p.add_argument("file", nargs="?", help=file_help)
    p.add_argument("--dataset", help="a named dataset: timemachine, tinyshakespeare, jaychou, nietzsche "
                                     "(see `rnnlab datasets`)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of FILE")
    p.add_argument("--errors", choices=("strict", "replace"), default="strict",
                   help="undecodable bytes: stop with an error, or replace them with U+FFFD")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a language model on a text file or a named dataset", allow_abbrev=False,
                       description="Train an RNN/GRU/LSTM language model; writes metrics.jsonl, a plot and "
                                   "checkpoints to --out.", formatter_class=Formatter)
    d = p.add_argument_group("data")
    _add_data_source(d, "a UTF-8 text file (default: --dataset timemachine)")
    d.add_argument("--preset", choices=PRESETS, default="raw", help="raw: every character; letters: the book's a-z + space")
    d.add_argument("--token", choices=TOKENS, default="char", help="tokens are characters or whitespace-separated words")
    d.add_argument("--max-tokens", type=int, default=0, help="keep the first N tokens (0 = all; the book uses 10000)")
    d.add_argument("--min-freq", type=int, default=0, help="tokens seen fewer times become <unk>")
    d.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out the last fraction of the stream for validation (0 = none, the book's setting)")
    d.add_argument("--prepared", metavar="DIR",
                   help="train on a corpus encoded by `rnnlab prepare` (memory-mapped, for texts larger than memory)")
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=MODELS, default="rnn")
    m.add_argument("--impl", choices=IMPLS, default="concise", help="scratch: explicit parameters (the book); concise: torch.nn layers; fast: the same maths with hand-written BPTT")
    m.add_argument("--hidden-size", type=int, default=256)
    m.add_argument("--num-layers", type=int, default=1)
    m.add_argument("--embedding-dim", type=int, default=0, help="learned embedding size (0 = one-hot inputs)")
    m.add_argument("--dropout", type=float, default=0.0, help="dropout on embeddings, between layers and before the output")
    m.add_argument("--activation", choices=("tanh", "relu"), default="tanh", help="RNN only")
    m.add_argument("--window", type=int, default=3, help="--model unrolled: tokens in, the next one out")
    m.add_argument("--init", choices=("auto", "normal", "torch"), default="auto",
                   help="auto: N(0,0.01^2) for scratch (the book), torch's default for concise")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=32,
                   help="minibatch rows; under torchrun the global batch, split evenly over the processes")
    t.add_argument("--num-steps", type=int, default=35, help="time steps per minibatch (BPTT length)")
    t.add_argument("--sampling", choices=SAMPLINGS, default="sequential",
                   help="sequential: state carried between minibatches; random: random windows, state reset")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    t.add_argument("--lr", type=float, default=1.0)
    t.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--lr-schedule", choices=SCHEDULES, default="constant",
                   help="cosine: decay to --min-lr over the run (over --max-seconds when set)")
    t.add_argument("--min-lr", type=float, default=0.0)
    t.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps")
    t.add_argument("--clip-norm", type=float, default=1.0, help="clip gradients to this global norm (0 = off)")
    t.add_argument("--epochs", type=int, default=500)
    t.add_argument("--max-seconds", type=float, default=0.0, help="stop after this much wall time (0 = no limit)")
    t.add_argument("--seed", type=int, default=0, help="one seed for Python, NumPy and torch")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs/latest", help="run directory: metrics, plot, checkpoints")
    r.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    r.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    r.add_argument("--save-every", type=int, default=0, help="checkpoint every N epochs (0 = about ten per run)")
    r.add_argument("--keep", type=int, default=2, help="snapshots kept in OUT/checkpoints (plus OUT/best)")
    r.add_argument("--prefix", action="append", dest="prefixes", metavar="TEXT",
                   help="prefix for progress samples (repeatable; default: the dataset's)")
    r.add_argument("--predict-every", type=int, default=50, help="greedy samples every N epochs (0 = never)")
    r.add_argument("--predict-length", type=int, default=50)
    r.add_argument("--log-every", type=int, default=10, help="print a metrics line every N epochs")
    r.add_argument("--quiet", action="store_true", help="no progress bar: plain log lines only")
    p.set_defaults(func=cmd_train)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="encode a large text once into memory-mapped ids for `train --prepared`",
                       allow_abbrev=False, formatter_class=Formatter,
                       description="Stream a text (never whole in memory) into DIR/ids.bin (uint8/16/32 by "
                                   "vocabulary size), DIR/vocab.json and DIR/prepared.json; then train with "
                                   "`rnnlab train --prepared DIR`.")
    _add_data_source(p, "the text file to encode")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the prepared corpus to")
    p.add_argument("--preset", choices=PRESETS, default="raw", help="raw: every character; letters: the book's a-z + space")
    p.add_argument("--token", choices=TOKENS, default="char", help="tokens are characters or whitespace-separated words")
    p.add_argument("--min-freq", type=int, default=0, help="tokens seen fewer times become <unk>")
    p.set_defaults(func=cmd_prepare)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint", allow_abbrev=False,
                       description="Warm up on --prefix, then continue it (greedy by default).", formatter_class=Formatter)
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    p.add_argument("--prefix", default=None, help="text to continue (default: the training run's first prefix)")
    p.add_argument("--prefix-file", help="read the prefix from this UTF-8 file")
    p.add_argument("--length", type=int, default=100, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the book); >0 samples")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: the smallest set with this mass")
    p.add_argument("--num-samples", type=int, default=1, help="independent continuations, generated as one batch")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (same seed, same text)")
    p.add_argument("--strict", action="store_true", help="error on prefix characters the model has never seen")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_generate)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="held-out perplexity of a checkpoint", allow_abbrev=False, formatter_class=Formatter,
                       description="Loss, perplexity and bits per token of a checkpoint on a text, read in order "
                                   "with the state carried (default: the run's own validation split).")
    p.add_argument("checkpoint", metavar="DIR")
    _add_data_source(p, "a text to evaluate on (default: the run's validation split)")
    p.add_argument("--batch-size", type=int, default=32, help="parallel rows of the stream")
    p.add_argument("--num-steps", type=int, default=35, help="chunk length")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list the named datasets and whether they are cached", formatter_class=Formatter)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnlab", description="Character and word RNN language models.")
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_prepare(sub)
    _add_generate(sub)
    _add_eval(sub)
    _add_datasets(sub)
    from .serve.cli import add_parsers
    add_parsers(sub)
    return parser


def _explicit(argv: list[str], parser: argparse.ArgumentParser) -> set[str]:
    """Config field names whose flags appear on the command line."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    given = set()
    for action in sub._actions:
        for opt in action.option_strings:
            if any(tok == opt or tok.startswith(opt + "=") for tok in argv):
                given.add(action.dest)
    return given


def _fill(cls, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(extra)
    return cls(**values)


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import merge_resume, stored_configs, train_run

    if args.dataset and args.file:
        raise UsageError("give either a text FILE or --dataset NAME, not both")
    if args.log_every <= 0:
        raise UsageError(f"--log-every must be a positive integer, got {args.log_every}")
    if args.prepared and (args.file or args.dataset):
        raise UsageError("give --prepared DIR or a text FILE / --dataset NAME, not both")
    fixed = sorted(args.explicit & {"preset", "token", "min_freq", "encoding"})
    if args.prepared and fixed:
        raise UsageError(f"--{fixed[0].replace('_', '-')} was fixed by `rnnlab prepare`; drop it with --prepared "
                         f"(prepare again to change it)")
    dataset = args.dataset if args.dataset or args.file or args.prepared else "timemachine"
    dcfg = _fill(DataConfig, args, path=args.file, dataset=dataset)
    mcfg = _fill(ModelConfig, args)
    tcfg = _fill(TrainConfig, args, prefixes=args.prefixes or [])
    if args.resume:
        explicit = args.explicit | ({"path"} if args.file else set())
        dcfg, mcfg, tcfg = merge_resume(stored_configs(args.out), (dcfg, mcfg, tcfg), explicit)
    result = train_run(dcfg, mcfg, tcfg, args.out, errors=args.errors, log_every=args.log_every, resume=args.resume,
                       overwrite=args.overwrite, progress=not args.quiet)
    return 130 if result.interrupted else 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepared import prepare_corpus
    from .pipeline import resolve_source

    if not args.file and not args.dataset:
        raise UsageError("give a text FILE (or --dataset NAME) to prepare")
    src = resolve_source(DataConfig(path=args.file, dataset=args.dataset))
    meta = prepare_corpus(src, args.out, preset=args.preset, token=args.token, min_freq=args.min_freq,
                          encoding=args.encoding, errors=args.errors, log=print)
    print(f"{meta['tokens']:,} tokens, vocabulary {meta['vocab_size']:,}, {meta['dtype']} ids in {args.out}; "
          f"train with: rnnlab train --prepared {args.out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_checkpoint
    from .data.corpus import preprocess, read_text
    from .runtime import select_device
    from .sampling import generate_text

    if args.length < 0:
        raise UsageError(f"--length must be >= 0, got {args.length}")
    if not args.temperature >= 0 or args.temperature == float("inf"):
        raise UsageError(f"--temperature must be a number >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise UsageError(f"--top-k must be >= 0, got {args.top_k}")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.prefix is not None and args.prefix_file:
        raise UsageError("give --prefix or --prefix-file, not both")
    ckpt = load_checkpoint(args.checkpoint, select_device(args.device))
    if args.prefix_file:
        prefix = read_text(args.prefix_file) if Path(args.prefix_file).stat().st_size else ""
    elif args.prefix is not None:
        prefix = args.prefix
    else:
        prefix = (ckpt.train_config.prefixes or [""])[0]
    if ckpt.data_config.preset == "letters":
        prefix = preprocess(prefix, "letters") if prefix.strip() else ""
    gen = torch.Generator(device=ckpt.model.device)
    gen.manual_seed(args.seed if args.seed is not None else torch.seed())
    texts = generate_text(ckpt.model, ckpt.vocab, prefix, args.length, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, num_samples=args.num_samples, generator=gen,
                          strict=args.strict, warn=lambda msg: print(f"rnnlab: warning: {msg}", file=sys.stderr))
    out = sys.stdout
    for i, text in enumerate(texts):
        if args.num_samples > 1:
            out.write(f"--- sample {i + 1}\n")
        out.write(text + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .pipeline import evaluate_checkpoint

    if args.dataset and args.file:
        raise UsageError("give either a text FILE or --dataset NAME, not both")
    if args.batch_size < 1 or args.num_steps < 1:
        raise UsageError("--batch-size and --num-steps must be positive integers")
    dcfg = None
    if args.file or args.dataset:
        dcfg = DataConfig(path=args.file, dataset=args.dataset, encoding=args.encoding)
    r = evaluate_checkpoint(args.checkpoint, dcfg, args.device, args.errors, args.batch_size, args.num_steps)
    if args.json:
        print(json.dumps(r, ensure_ascii=False))
    else:
        unk = f" ({r['unk_tokens']:,} unknown to the model)" if r["unk_tokens"] else ""
        print(f"{r['source']}: {r['tokens']:,} tokens{unk}\n"
              f"loss {r['loss']:.4f} nats/token  perplexity {r['ppl']:.3f}  {r['bpc']:.4f} bits/token")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data.registry import DATASETS, data_dir

    root = data_dir()
    rows = []
    for ds in DATASETS.values():
        path = root / ds.filename
        rows.append({"name": ds.name, "cached": path.is_file(), "bytes": path.stat().st_size if path.is_file() else ds.size,
                     "path": str(path), "url": ds.url, "sha1": ds.sha1, "description": ds.description})
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"data directory: {root} (set RNNLAB_DATA_DIR to change)")
    for r in rows:
        size = f"{r['bytes']:,} bytes" if r["bytes"] else "size unknown"
        print(f"  {r['name']:16} {'cached ' if r['cached'] else 'missing'}  {size:>18}  {r['description']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = _explicit(argv, parser) if args.command == "train" else set()
    try:
        return args.func(args)
    except RnnlabError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnlab generate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
