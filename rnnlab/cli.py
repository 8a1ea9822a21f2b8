"""``rnnlab`` command line: flags generated from the config dataclasses (``cli_args``), parsed into
configs, handed to the library; one-line errors, exit 2 for usage errors."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli_args import add_settings, build, given, use_threads
from .cli_args import add_source as _add_source
from .cli_args import data_config as _data_config
from .cli_chats import add_chat_out, write_chat_out
from .config import DataConfig, ModelConfig, RunConfig, Threads, TrainConfig
from .errors import RnnlabError, UsageError
from .io import json_text
from .version import __version__

Formatter = argparse.RawDescriptionHelpFormatter


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2). A command's parser reads its positionals
    wherever they stand among the options (``rnnlab eval DIR --keyboard FILE``, ``rnnlab train
    --quiet FILE``): plain argparse gives an optional positional its empty match at the first
    option and then refuses the FILE after it as "unrecognized"."""

    _intermixing = False

    def error(self, message: str):  # "rnnlab train: error: ..."
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        if self._subparsers is not None or self._intermixing:  # the top level (it has the commands), or inside
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a language model on a text file or a named dataset", allow_abbrev=False,
                       description="Train an RNN/GRU/LSTM language model; writes metrics.jsonl, a plot and "
                                   "checkpoints to --out.", formatter_class=Formatter)
    d = p.add_argument_group("data")
    _add_source(d, "a UTF-8 text file, or a chat export with --chat (default: --dataset timemachine)")
    add_settings(d, DataConfig)
    add_chat_out(d)
    d.add_argument("--prepared", metavar="DIR",
                   help="train on a corpus encoded by `rnnlab prepare` (memory-mapped, for texts larger than memory)")
    add_settings(p.add_argument_group("model"), ModelConfig)
    add_settings(p.add_argument_group("training"), TrainConfig)
    r = p.add_argument_group("run")
    add_settings(r, RunConfig, help_default={"precision": "auto (fp32 with --recipe book)"})
    r.add_argument("--out", default="runs/latest", help="run directory: metrics, plot, checkpoints (default: runs/latest)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    r.add_argument("--overwrite", action="store_true", help="replace a run already in --out (its checkpoints, "
                                                            "snapshots and best weights)")
    r.add_argument("--prefix", action="append", dest="prefixes", metavar="TEXT", default=argparse.SUPPRESS,
                   help="prefix for progress samples (repeatable; default: the dataset's)")
    r.add_argument("--quiet", action="store_true", help="no progress bar: plain log lines only")
    r.add_argument("--dry-run", action="store_true", help="settle the run (the recipe's choices, with the training "
                                                          "speed it measures here) and print the plan; train nothing")
    r.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train data-parallel on N local processes (torch's launcher, as `torchrun --standalone "
                        "--nproc-per-node N -m rnnlab train ...`; the settings are checked once, here, first)")
    add_settings(r, Threads)
    p.set_defaults(func=cmd_train, argv=None)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="encode a large text once into memory-mapped ids for `train --prepared`",
                       allow_abbrev=False, formatter_class=Formatter,
                       description="Stream a text (never whole in memory) into DIR/ids.bin (uint8/16/32 by "
                                   "vocabulary size), DIR/vocab.json and DIR/prepared.json; then train with "
                                   "`rnnlab train --prepared DIR`.")
    _add_source(p, "the text file to encode")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the prepared corpus to")
    add_settings(p, DataConfig, skip=("max_tokens", "val_fraction", "select_fraction"))
    add_chat_out(p)
    add_settings(p, Threads)
    p.set_defaults(func=cmd_prepare)


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list the named datasets and whether they are cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnlab", description="Character and word RNN language models.")
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_prepare(sub)
    from .cli_inference import add_parsers as add_inference
    add_inference(sub)  # generate, eval, export, words
    _add_datasets(sub)
    from .cli_chats import add_parser
    add_parser(sub)
    from .serve.cli import add_parsers
    add_parsers(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import die_with_launcher, launched_by_torchrun
    from .gather import gather
    from .pipeline import train_run
    from .plan import PLAN_ENV, all_fields, read_plan_file

    use_threads(args, small_steps=False)

    prepared = getattr(args, "prepared", None)
    if prepared and (args.file or args.dataset):
        raise UsageError("give --prepared DIR or a text FILE / --dataset NAME, not both")
    fixed = sorted(set(given(args, DataConfig)) & {"preset", "token", "min_freq", "encoding"})
    if prepared and fixed:
        raise UsageError(f"--{fixed[0].replace('_', '-')} was fixed by `rnnlab prepare`; drop it with --prepared "
                         f"(prepare again to change it)")
    dcfg = _data_config(args, None if prepared else "timemachine")
    dcfg.prepared = prepared
    mcfg, tcfg = build(args, ModelConfig), build(args, TrainConfig)
    rcfg = build(args, RunConfig, prefixes=getattr(args, "prefixes", []))
    configs = (dcfg, mcfg, tcfg, rcfg)
    # the names the user typed (the rest is the dataclasses' defaults, the recipe's, or on --resume the stored run's)
    explicit = set().union(*(given(args, c) for c in (DataConfig, ModelConfig, TrainConfig, RunConfig)))
    explicit |= {name for name, typed in (("path", args.file), ("dataset", args.dataset), ("prepared", prepared),
                                          ("prefixes", hasattr(args, "prefixes"))) if typed}
    if args.dry_run:
        if args.resume:
            raise UsageError("--dry-run shows a new run's plan; a resumed run's settings are in its config.json")
        plan = _settle_here(configs, explicit, args.out, args.nproc)
        m = plan.model
        print(f"plan: model {m.model} --impl {m.impl} --hidden-size {m.hidden_size} --embedding-dim {m.embedding_dim} "
              f"--num-layers {m.num_layers} --dropout {m.dropout:g} --precision {plan.run.precision} "
              f"({m.parameter_count():,} parameters); "
              f"{len(plan.corpus.train_ids):,} training tokens; nothing was trained")
        return 0
    if getattr(args, "chat_out", None):  # the export as the run will read it (on --resume: the stored settings)
        write_chat_out(args, gather(*configs, explicit, args.out, args.resume).data)
    if args.nproc != 1:
        return _launch(args, configs, explicit)
    if launched_by_torchrun():
        die_with_launcher()
    plan_file = os.environ.get(PLAN_ENV)
    if plan_file and launched_by_torchrun() and not args.resume:  # a rank of `--nproc`: the launcher settled the run
        configs, explicit = read_plan_file(plan_file), all_fields()
    result = train_run(*configs, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                       explicit=explicit)
    return 128 + (result.signal or 2) if result.interrupted else 0  # 130 for SIGINT, 143 for SIGTERM


def _settle_here(configs, explicit: set[str], out: str, nproc: int = 1):
    """Gather and settle a new run in this process (``--dry-run``, the ``--nproc`` launcher) as
    ``train_run`` does, and print its plan."""
    import torch

    from .distributed import device_for, env_context
    from .gather import gather
    from .plan import settle

    gathered = gather(*configs, explicit, out)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc) if nproc > 1 else threads)  # as each rank will have
    try:
        plan = settle(*gathered.configs, gathered.explicit, device_for(env_context(), gathered.run.device),
                      world_size=nproc)
    finally:
        torch.set_num_threads(threads)
    for line in plan.lines:
        print(line, flush=True)
    return plan


def _launch(args: argparse.Namespace, configs, explicit: set[str]) -> int:
    """``train --nproc N``: gather and settle the run here, once (the recipe, its measured size,
    every check a usage error could come from), then start N ranks that train exactly that plan.
    A resumed run is gathered here (its stored settings checked against the flags) and each rank
    resumes it."""
    import tempfile

    from .distributed import launch_local, launched_by_torchrun
    from .gather import gather
    from .plan import PLAN_ENV, write_plan_file

    if not 2 <= args.nproc <= 64:
        raise UsageError(f"--nproc must be between 1 and 64, got {args.nproc}")
    if launched_by_torchrun():
        raise UsageError("--nproc starts its own processes; drop it under torchrun")
    argv, skip = [], False
    for a in args.argv[1:]:  # the command line without --nproc (after the "train" word)
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    if args.resume:  # a resumed run's settings are settled already (stored in the run)
        gather(*configs, explicit, args.out, resume=True)
        return launch_local(["train", *argv], args.nproc)
    plan = _settle_here(configs, explicit, args.out, args.nproc)
    with tempfile.TemporaryDirectory(prefix="rnnlab-plan-") as tmp:
        path = Path(tmp) / "plan.json"
        write_plan_file(plan, path)
        os.environ[PLAN_ENV] = str(path)
        try:
            return launch_local(["train", *argv], args.nproc)
        finally:
            os.environ.pop(PLAN_ENV, None)


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepared import prepare_corpus
    from .data.text_data import resolve_source

    if not args.file and not args.dataset:
        raise UsageError("give a text FILE (or --dataset NAME) to prepare")
    use_threads(args, small_steps=False)
    dcfg = _data_config(args)
    dcfg.validate()
    write_chat_out(args, dcfg)
    meta = prepare_corpus(resolve_source(dcfg), args.out, preset=dcfg.preset, token=dcfg.token,
                          min_freq=dcfg.min_freq, encoding=dcfg.encoding, errors=dcfg.errors, log=print,
                          chat=dcfg.chat, speakers=dcfg.speaker)
    print(f"{meta['tokens']:,} tokens, vocabulary {meta['vocab_size']:,}, {meta['dtype']} ids in {args.out}; "
          f"train with: rnnlab train --prepared {args.out}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data.registry import DATASETS, data_dir

    root = data_dir()
    rows = []
    for ds in DATASETS.values():
        path = root / ds.filename
        rows.append({"name": ds.name, "cached": path.is_file(), "bytes": path.stat().st_size if path.is_file() else ds.size,
                     "url": ds.url, "sha1": ds.sha1, "description": ds.description})
    if args.json:
        print(json_text(rows, ensure_ascii=False, indent=2))
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
    if hasattr(args, "argv"):
        args.argv = argv[argv.index("train"):] if "train" in argv else argv
    try:
        code = args.func(args)
        if code == 0 and getattr(args, "threads_note", None):
            print(f"rnnlab: {args.threads_note}", file=sys.stderr)
        return code
    except RnnlabError as e:
        if os.environ.get("RANK", "0") == "0":  # under --nproc/torchrun every rank meets the same error: rank 0 says it
            print(f"rnnlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnlab generate ... | head`
        return 0
    except MemoryError:
        print("rnnlab: error: out of memory; use a smaller model, batch or text", file=sys.stderr)
        return 1
    except OSError as e:
        from .io import os_error_hint

        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"rnnlab: error:{where} {e.strerror or e}; {os_error_hint(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
