"""Typed configuration, one dataclass per concern, stored in every checkpoint as JSON.

Names are the same everywhere: a field ``num_steps`` is the CLI flag ``--num-steps``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

MODELS = ("rnn", "gru", "lstm", "unrolled")
IMPLS = ("scratch", "concise", "fast")
SAMPLINGS = ("sequential", "random")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine")
PRESETS = ("raw", "letters")
TOKENS = ("char", "word")


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    path: str | None = None  # a text file, or None when ``dataset`` names one
    dataset: str | None = None  # a registry name (rnnlab.data.registry)
    preset: str = "raw"  # raw: keep every character; letters: the book's 26 letters + space
    token: str = "char"  # char | word
    max_tokens: int = 0  # keep the first N tokens of the stream (0 = all)
    encoding: str = "utf-8"
    min_freq: int = 0
    val_fraction: float = 0.0  # the last fraction of the token stream is held out (0 = the book: none)
    prepared: str | None = None  # a directory written by `rnnlab prepare` (memory-mapped ids + vocab)

    def validate(self) -> None:
        _choice("preset", self.preset, PRESETS)
        _choice("token", self.token, TOKENS)
        if self.max_tokens < 0:
            raise UsageError(f"--max-tokens must be >= 0 (0 keeps every token), got {self.max_tokens}")
        if self.min_freq < 0:
            raise UsageError(f"--min-freq must be >= 0, got {self.min_freq}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture (the weights live in safetensors)."""

    model: str = "rnn"  # rnn | gru | lstm | unrolled (the AWS post's many-to-one model)
    impl: str = "concise"  # scratch | concise | fast
    vocab_size: int = 0
    hidden_size: int = 256
    num_layers: int = 1
    embedding_dim: int = 0  # 0 = one-hot inputs (the book)
    dropout: float = 0.0
    activation: str = "tanh"  # rnn only: tanh | relu
    init: str = "auto"  # auto (scratch: book's N(0, 0.01^2) and zero biases; concise: torch's) | normal | torch
    window: int = 3  # unrolled only: tokens read per prediction (the post: 3)

    def validate(self) -> None:
        _choice("model", self.model, MODELS)
        _choice("impl", self.impl, IMPLS)
        _choice("activation", self.activation, ("tanh", "relu"))
        _choice("init", self.init, ("auto", "normal", "torch"))
        _positive("hidden-size", self.hidden_size)
        _positive("num-layers", self.num_layers)
        _positive("window", self.window)
        if self.embedding_dim < 0:
            raise UsageError(f"--embedding-dim must be >= 0 (0 = one-hot), got {self.embedding_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.window != 3 and self.model != "unrolled":
            raise UsageError("--window applies to --model unrolled only; the recurrent models carry a state instead")
        if self.activation != "tanh" and self.model != "rnn":
            raise UsageError("--activation applies to --model rnn only; "
                             "GRU and LSTM use their own gates, unrolled the post's ReLU")


@dataclass
class TrainConfig:
    """How to train: batching, optimiser, schedule, reporting."""

    batch_size: int = 32
    num_steps: int = 35
    sampling: str = "sequential"  # sequential | random
    optimizer: str = "sgd"
    lr: float = 1.0
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # constant | cosine (to min_lr over the run, after warmup_steps)
    min_lr: float = 0.0
    warmup_steps: int = 0
    clip_norm: float = 1.0  # 0 disables clipping
    epochs: int = 500
    max_seconds: float = 0.0  # stop after this much wall time (0 = no limit)
    seed: int = 0
    device: str = "auto"
    predict_every: int = 50  # greedy text for each prefix every N epochs (0 = never)
    prefixes: list[str] = field(default_factory=list)
    predict_length: int = 50
    save_every: int = 0  # checkpoint every N epochs (0 = about ten times per run); always at the end
    keep: int = 2  # snapshots kept in OUT/checkpoints (plus OUT/best)

    def validate(self) -> None:
        _positive("batch-size", self.batch_size)
        _positive("num-steps", self.num_steps)
        _positive("epochs", self.epochs)
        _choice("sampling", self.sampling, SAMPLINGS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        _choice("lr-schedule", self.lr_schedule, SCHEDULES)
        for name, v in (("momentum", self.momentum), ("weight-decay", self.weight_decay), ("min-lr", self.min_lr),
                        ("max-seconds", self.max_seconds)):
            if not 0 <= v < float("inf"):
                raise UsageError(f"--{name} must be a number >= 0, got {v}")
        if self.momentum and self.optimizer != "sgd":
            raise UsageError("--momentum applies to --optimizer sgd only")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise UsageError(f"--warmup-steps must be an integer >= 0, got {self.warmup_steps}")
        if not self.clip_norm >= 0 or self.clip_norm == float("inf"):
            raise UsageError(f"--clip-norm must be >= 0 (0 disables clipping), got {self.clip_norm}")
        if self.predict_every < 0:
            raise UsageError(f"--predict-every must be >= 0, got {self.predict_every}")
        if self.save_every < 0:
            raise UsageError(f"--save-every must be >= 0 (0 = about ten saves per run), got {self.save_every}")
        if self.keep < 1:
            raise UsageError(f"--keep must be >= 1, got {self.keep}")
        if self.predict_length < 0:
            raise UsageError(f"--predict-length must be >= 0, got {self.predict_length}")


# Settings that may change when a run is resumed; everything else must match the checkpoint.
RUN_CONTROL = {"epochs", "max_seconds", "device", "predict_every", "prefixes", "predict_length", "save_every", "keep"}


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown --{name} {value!r}; choose one of: {', '.join(choices)}")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise UsageError(f"--{name} must be a positive integer, got {value!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]):
    """Build a config from JSON, ignoring keys this version does not know (forward compatible)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
