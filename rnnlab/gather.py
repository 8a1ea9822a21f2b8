"""What the user gave -> the configs a run settles: the step before ``plan.settle``, one for the CLI
and the library alike.

    the four configs + the names the user chose (``explicit``: the flags typed; for a library
    caller who names none, every field that differs from its dataclass default)
        ──► --init-from DIR: the base's architecture and text settings, the rest as given; a
            contradicting choice is refused, and the base's fields count as chosen (no recipe fills them)
        ──► --resume: the run's stored data, model and training settings (a different choice is
            refused) and its stored run controls with the chosen ones over them
        ──► ``Gathered``: copies of the configs and the explicit names, for ``plan.settle``

``train_run`` gathers before it settles (the library, the CLI and every rank of ``--nproc``);
``rnnlab train --dry-run`` and the ``--nproc`` launcher gather the same way before they settle or launch.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

from .checkpoint import CONFIG, read_configs, resolve_checkpoint_dir
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .errors import RnnlabError, UsageError
from .fields import flag

ARCHITECTURE = ("model", "hidden_size", "num_layers", "embedding_dim", "activation", "window")
FIXED_BY_BASE = ("preset", "token", "min_freq")  # the base's vocabulary and how it reads text


class Gathered(NamedTuple):
    """The configs to settle and the field names the user chose (a recipe fills only the others)."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    run: RunConfig
    explicit: frozenset[str]

    @property
    def configs(self) -> tuple[DataConfig, ModelConfig, TrainConfig, RunConfig]:
        return self.data, self.model, self.train, self.run


def explicit_of(*configs) -> set[str]:
    """A library caller's choices: every field whose value differs from its dataclass default."""
    return {name for cfg in configs for name, value in cfg.to_dict().items() if value != getattr(type(cfg)(), name)}


def stored_configs(run_dir: str | Path) -> tuple[DataConfig, ModelConfig, TrainConfig, RunConfig]:
    """The configs saved in a run directory (for ``--resume``)."""
    d = Path(run_dir)
    if not (d / CONFIG).is_file():
        raise UsageError(f"{d}: no checkpoint to resume (no {CONFIG}); drop --resume to start a new run")
    dcfg, mcfg, tcfg, rcfg, _ = read_configs(resolve_checkpoint_dir(d))
    return dcfg, mcfg, tcfg, rcfg


def gather(dcfg: DataConfig, mcfg: ModelConfig, tcfg: TrainConfig, rcfg: RunConfig, explicit: set[str] | None = None,
           out: str | Path | None = None, resume: bool = False) -> Gathered:
    """The configs a run settles from what the user gave (see the module docstring). The caller's
    configs are not changed. ``out``: the run directory (read on ``resume``)."""
    explicit = set(explicit) if explicit is not None else explicit_of(dcfg, mcfg, tcfg, rcfg)
    dcfg, mcfg, tcfg, rcfg = (type(c).from_dict(c.to_dict(), validate=False) for c in (dcfg, mcfg, tcfg, rcfg))
    for cfg in (dcfg, tcfg, rcfg):  # the model's once the recipe has picked its --impl/--embedding-dim (settle)
        cfg.validate()
    if resume:
        if out is None or not str(out).strip():
            raise UsageError("--resume continues the run in --out; give its directory")
        s_data, s_model, s_train, s_run = stored_configs(out)
        dcfg, mcfg, tcfg = merge_resume((s_data, s_model, s_train), (dcfg, mcfg, tcfg), explicit)
        rcfg = s_run.replace(**{f.name: getattr(rcfg, f.name) for f in dataclasses.fields(RunConfig)
                                if f.name in explicit})
    elif rcfg.init_from:
        dcfg, mcfg = merge_init_from(base_configs(rcfg.init_from), (dcfg, mcfg), explicit, rcfg.init_from)
        explicit |= set(ARCHITECTURE) | set(FIXED_BY_BASE)
    return Gathered(dcfg, mcfg, tcfg, rcfg, frozenset(explicit))


def base_configs(base_dir: str) -> tuple[DataConfig, ModelConfig]:
    """The data and model settings of the run ``--init-from`` names."""
    if not Path(base_dir).is_dir():
        raise RnnlabError(f"--init-from {base_dir}: no such checkpoint directory; give the --out DIR of a training run")
    base_data, base_model, *_ = read_configs(resolve_checkpoint_dir(base_dir))
    return base_data, base_model


def merge_init_from(base: tuple[DataConfig, ModelConfig], given: tuple[DataConfig, ModelConfig],
                    explicit: set[str], base_dir: str) -> tuple[DataConfig, ModelConfig]:
    """Settings for fine-tuning ``base_dir``'s model: its architecture and its text settings
    (preset, char/word, vocabulary), with the given data source and the other explicit choices
    (dropout, impl, ...). An explicit choice that contradicts the base is refused."""
    (base_data, base_model), (data, model) = base, given
    merged_model = ModelConfig.from_dict(base_model.to_dict(), validate=False)
    for name, value in model.to_dict().items():
        if name not in explicit or name == "vocab_size":
            continue
        if name in ARCHITECTURE and value != getattr(base_model, name):
            raise UsageError(f"{flag(name)} {value!r} conflicts with the base model's {getattr(base_model, name)!r} "
                             f"(--init-from {base_dir}); fine-tuning keeps the base's architecture: drop the flag")
        setattr(merged_model, name, value)
    merged_data = DataConfig.from_dict(data.to_dict(), validate=False)
    for name in FIXED_BY_BASE:
        if name in explicit and getattr(data, name) != getattr(base_data, name):
            raise UsageError(f"{flag(name)} does not apply with --init-from: the base model's vocabulary and "
                             f"text settings ({flag(name)} {getattr(base_data, name)!r}) are kept; drop the flag")
        setattr(merged_data, name, getattr(base_data, name))
    return merged_data, merged_model


def merge_resume(stored: tuple[DataConfig, ModelConfig, TrainConfig],
                 given: tuple[DataConfig, ModelConfig, TrainConfig], explicit: set[str]) -> tuple:
    """Settings for a resumed run: the stored data, model and training settings; any of them given
    explicitly must equal the stored value (the run controls, ``RunConfig``, are the caller's)."""
    out = []
    for old, new in zip(stored, given):
        merged = type(old).from_dict(old.to_dict(), validate=False)
        for name, value in new.to_dict().items():
            if name not in explicit or name == "vocab_size":
                continue
            was = getattr(old, name)
            if name in ("path", "prepared") and was is not None and value is not None:  # stored absolute
                was, value = os.path.abspath(was), os.path.abspath(value)
            if was != value:
                what = {"path": "the text FILE", "prepared": "--prepared"}.get(name, flag(name))
                had = f"run, which has no {what}" if was is None else repr(was)
                raise UsageError(f"{what} {value!r} differs from the checkpoint's {had}; drop it to resume, "
                                 f"or start a new run with another --out")
        out.append(merged)
    return tuple(out)


__all__ = ["ARCHITECTURE", "FIXED_BY_BASE", "Gathered", "base_configs", "explicit_of", "gather", "merge_init_from",
           "merge_resume", "stored_configs"]
