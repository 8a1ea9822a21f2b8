"""``rnnlab generate``, ``eval``, ``export`` and ``words``: the commands that run a trained model
(``suggest`` and ``serve`` are ``rnnlab.serve.cli``). Argument parsing and printing only: flags
generated from the settings classes (``--device``/``--int8``/``--precision`` from
``InferenceConfig``, ``--dynamic-*`` from ``AdaptConfig``), the work in the library."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_args import add_settings, add_source, build, data_config, use_threads
from .cli_chats import add_chat_out, write_chat_out
from .config import AdaptConfig, DataConfig, Device, GenerateConfig, InferenceConfig, KeyboardEval, Threads, WordsConfig
from .errors import UsageError
from .io import json_text

Formatter = argparse.RawDescriptionHelpFormatter


def add_parsers(sub) -> None:
    """Register ``generate``, ``eval``, ``export`` and ``words`` on ``rnnlab``'s subparsers."""
    for add in (_add_generate, _add_eval, _add_export, _add_words):
        add(sub)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint", allow_abbrev=False,
                       description="Warm up on --prefix, then continue it (greedy by default).", formatter_class=Formatter)
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    p.add_argument("--prefix", default=None, help="text to continue (default: the training run's first prefix; "
                                                  "an empty prefix starts a new text)")
    p.add_argument("--prefix-file", help="read the prefix from this UTF-8 file")
    add_settings(p, GenerateConfig)
    add_settings(p, InferenceConfig)
    add_settings(p, Threads)
    p.set_defaults(func=cmd_generate)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="held-out perplexity of a checkpoint", allow_abbrev=False, formatter_class=Formatter,
                       description="Loss, perplexity and bits per token of a checkpoint on a text, read in order "
                                   "with the state carried (default: the run's own validation split).")
    p.add_argument("checkpoint", metavar="DIR")
    add_source(p, "a text to evaluate on (default: the run's validation split)")
    add_settings(p, DataConfig, skip=("preset", "token", "max_tokens", "min_freq", "val_fraction", "select_fraction"))
    add_chat_out(p)
    p.add_argument("--batch-size", type=int, default=32, help="parallel rows of the stream (default: 32)")
    p.add_argument("--num-steps", type=int, default=35, help="chunk length (default: 35)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_settings(p, InferenceConfig)
    d = p.add_argument_group("dynamic evaluation", "--dynamic: the model adapts to the text as it reads it "
                                                   "(a gradient step after scoring each chunk); the checkpoint is not changed")
    d.add_argument("--dynamic", action="store_true", help="also report the dynamic evaluation beside the static one")
    add_settings(d, AdaptConfig, skip=("clients",), prefix="dynamic_")
    k = p.add_argument_group("keyboard", "--keyboard: a simulated user types the test split (or FILE) with the top "
                                         "1/3/5 word completions shown before each keystroke, one key to accept; "
                                         "rnnlab's served keyboard against the fair n-gram keyboard and Presage, "
                                         "both built from the training split")
    k.add_argument("--keyboard", action="store_true", help="report keystroke savings instead of perplexity")
    add_settings(k, KeyboardEval, prefix="keyboard_")
    add_settings(p, Threads)
    p.set_defaults(func=cmd_eval)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a one-step model for devices (ONNX, optionally int8)", allow_abbrev=False,
                       description="Write DIR/onnx/model.onnx (one step: token ids and state in, logits and state out, "
                                   "any number of rows), vocab.json and export.json, checked by onnxruntime against "
                                   "PyTorch over a 200-token stream.")
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", metavar="OUT", help="where to write the export (default: DIR/onnx)")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 quantisation)")
    add_settings(p, Threads)
    p.set_defaults(func=cmd_export)


def _add_words(sub) -> None:
    p = sub.add_parser("words", help="build the keyboard's word model of a checkpoint and tune the word search",
                       allow_abbrev=False, formatter_class=Formatter,
                       description="Build the lexicon and word n-gram of a character checkpoint from its training "
                                   "split, tune the word search's weights, out-of-lexicon factor and candidate counts "
                                   "on its selection slice (or the tail of its training split), and save them in "
                                   "DIR/words.json and DIR/words.safetensors (`rnnlab train` does this at the end; "
                                   "this is for checkpoints trained before).")
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    add_settings(p, WordsConfig)
    add_settings(p, Device)
    p.set_defaults(func=cmd_words)


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_for_inference
    from .config import check_text
    from .data.corpus import read_text
    from .decoding import generate_text

    gcfg, inference = build(args, GenerateConfig), build(args, InferenceConfig)
    gcfg.validate()
    inference.validate()
    use_threads(args, small_steps=gcfg.num_samples == 1)  # one stream: one token at a time
    if args.prefix is not None and args.prefix_file:
        raise UsageError("give --prefix or --prefix-file, not both")
    prefix = None
    if args.prefix_file:
        prefix = read_text(args.prefix_file, allow_empty=True)
    elif args.prefix is not None:
        prefix = args.prefix
    if prefix is not None:
        check_text(prefix, "the prefix")
    ckpt = load_for_inference(args.checkpoint, inference, log=lambda msg: print(f"rnnlab: {msg}", file=sys.stderr))
    if prefix is None:
        prefix = (ckpt.run_config.prefixes or [""])[0]
    gen = torch.Generator(device=ckpt.model.device)
    gen.manual_seed(gcfg.seed if gcfg.seed is not None else torch.seed())
    texts = generate_text(ckpt.model, ckpt.tokenizer, prefix, gcfg, gen,
                          warn=lambda msg: print(f"rnnlab: warning: {msg}", file=sys.stderr))
    out = sys.stdout
    for i, text in enumerate(texts):
        if gcfg.num_samples > 1:
            out.write(f"--- sample {i + 1}\n")
        out.write(text + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .pipeline import evaluate_checkpoint

    if args.batch_size < 1 or args.num_steps < 1:
        raise UsageError("--batch-size and --num-steps must be positive integers")
    use_threads(args, small_steps=args.keyboard or args.dynamic)  # keystrokes; or one row in chunks of 20
    dcfg = data_config(args) if (args.file or args.dataset) else None
    write_chat_out(args, dcfg)
    keyboard = build(args, KeyboardEval, prefix="keyboard_")
    keyboard.validate(prefix="keyboard_")
    dynamic = build(args, AdaptConfig, prefix="dynamic_")
    dynamic.validate(prefix="dynamic_")  # given without --dynamic, a wrong value is still wrong
    inference = build(args, InferenceConfig)
    inference.validate()
    if args.keyboard:
        return _keyboard_eval(args, dcfg, keyboard, inference)
    dynamic = dynamic if args.dynamic else None
    if inference.int8 and dynamic is not None:
        raise UsageError("--dynamic trains the model as it reads; an int8 copy cannot be trained (drop --int8)")
    r = evaluate_checkpoint(args.checkpoint, dcfg, batch_size=args.batch_size, num_steps=args.num_steps,
                            dynamic=dynamic, log=lambda msg: print(msg, file=sys.stderr), **inference.to_dict())
    if args.json:
        print(json_text(r, ensure_ascii=False))
        return 0
    unk = f" ({r['unk_tokens']:,} unknown to the model)" if r["unk_tokens"] else ""
    print(f"{r['source']}: {r['tokens']:,} tokens{unk}\n"
          f"loss {r['loss']:.4f} nats/token  perplexity {r['ppl']:.3f}  {r['bpc']:.4f} bits/token")
    if dynamic is not None:
        s, d = r["static_1row"], r["dynamic"]
        print(f"read in order, one row, chunks of {d['chunk']}: static loss {s['loss']:.4f}, dynamic loss "
              f"{d['loss']:.4f} ({d['loss'] - s['loss']:+.4f}; {d['method']}, lr {d['lr']:g})")
    return 0


def _keyboard_eval(args: argparse.Namespace, dcfg: DataConfig | None, settings: KeyboardEval,
                   inference: InferenceConfig) -> int:
    from .keyboard.run import evaluate_keyboards, table

    if args.dynamic:
        raise UsageError("--keyboard and --dynamic are separate evaluations; give one of them")
    report = evaluate_keyboards(args.checkpoint, dcfg, settings, log=lambda msg: print(msg, file=sys.stderr),
                                **inference.to_dict())
    if args.json:
        print(json_text(report, ensure_ascii=False))
        return 0
    r = next(iter(report["keyboards"].values()))
    print(f"{report['source']}: {r['words']:,} words, {r['characters']:,} characters typed\n{table(report)}")
    return 0


def cmd_words(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .keyboard.tune import build_words
    settings, device = build(args, WordsConfig), build(args, Device)
    settings.validate()
    device.validate()
    ck = load_checkpoint(args.checkpoint, device.torch_device())
    if ck.tokenizer.word_level:
        raise UsageError(f"{args.checkpoint} is a word-level model: it completes from its own vocabulary and needs no "
                         f"word model")
    build_words(ck.model, ck.tokenizer, ck.data_config, args.checkpoint, settings, log=print)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    use_threads(args, small_steps=False)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "onnx"
    meta = export_onnx(args.checkpoint, out, int8=args.int8)
    checks = meta["checks"]
    files = ", ".join(f"{out / f} ({(out / f).stat().st_size:,} bytes)" for f in meta["files"].values())
    print(f"wrote {files}; onnxruntime vs PyTorch over {checks['steps']} tokens: max |logit difference| "
          f"{checks['float32_max_abs_logit_diff']:.1e} (float32)"
          + (f", {checks['int8_max_abs_logit_diff']:.3f} (int8)" if "int8_max_abs_logit_diff" in checks else ""))
    return 0
