"""Command-line flags generated from the config dataclasses: each field's flag, type, choices,
help and default come from its declaration (``rnnlab.fields.setting``), written once.

Flags default to "not given" (``argparse.SUPPRESS``), so the parsed namespace holds exactly the
flags on the command line: ``given(args, cls)`` is what the user asked for, and the dataclass
supplies the rest (or, on ``--resume``, the checkpoint does). Also here: the text source every
data command takes (``add_source``, ``data_config``) and ``--threads`` (``use_threads``).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from .config import DataConfig, Threads
from .errors import UsageError
from .fields import kind_of, choices_of, flag


def add_settings(group, cls: type, skip: tuple[str, ...] = (), help_default: dict[str, Any] | None = None,
                 prefix: str = "") -> None:
    """Add a flag for every command-line field of the dataclass ``cls`` to ``group`` (``prefix``
    names them apart when two dataclasses share field names: ``--dynamic-lr``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in skip:
            continue
        base, optional = kind_of(hints[f.name])
        default = (help_default or {}).get(f.name, f.default)
        hidden = default is None or default is False or default is dataclasses.MISSING  # nothing worth saying
        shown = "" if hidden else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": argparse.SUPPRESS,
                                  "help": meta.get("help", "") + shown}
        if base is bool:
            kwargs["action"] = "store_true"
        elif base is list:  # a repeatable flag: each use adds one value
            kwargs.update(action="append", type=str)
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        else:
            kwargs["type"] = _argparse_type(meta["parse"]) if meta.get("parse") else base
            choices = choices_of(f)
            if choices is not None:
                kwargs["choices"] = choices
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        group.add_argument(flag(prefix + f.name), **kwargs)


def _argparse_type(parse):
    """``parse`` with its ``UsageError`` turned into argparse's own one-line usage error."""
    from .errors import RnnlabError

    def convert(text: str):
        try:
            return parse(text)
        except RnnlabError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def given(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` whose flags are on the command line, with their values."""
    return {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)
            if f.metadata.get("cli", True) and hasattr(args, prefix + f.name)}


def build(args: argparse.Namespace, cls: type, prefix: str = "", **extra):
    """An instance of ``cls``: the flags given, ``extra``, and the dataclass defaults for the rest."""
    values = given(args, cls, prefix)
    values.update(extra)
    return cls(**values)


def add_source(p, file_help: str) -> None:
    """A command's text: a FILE positional or ``--dataset NAME`` (``data_config`` reads them)."""
    p.add_argument("file", nargs="?", help=file_help)
    p.add_argument("--dataset", help="a named dataset: timemachine, tinyshakespeare, jaychou, nietzsche "
                                     "(see `rnnlab datasets`)")


def data_config(args: argparse.Namespace, default_dataset: str | None = None) -> DataConfig:
    """The ``DataConfig`` of a command's text source (``add_source``) and data flags."""
    if args.dataset and args.file:
        raise UsageError("give either a text FILE or --dataset NAME, not both")
    dataset = args.dataset or (None if args.file else default_dataset)
    return build(args, DataConfig, path=args.file, dataset=dataset)


def use_threads(args: argparse.Namespace, small_steps: bool) -> None:
    """``--threads``, or the command's own choice (``runtime.use_threads``); what was chosen is said
    once the command has succeeded (``main``), so that an error stays one line."""
    from .runtime import use_threads as choose

    threads = build(args, Threads)
    threads.validate()
    args.threads_note = choose(threads.threads, small_steps)
