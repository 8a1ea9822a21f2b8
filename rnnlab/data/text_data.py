"""A corpus as the trainer needs it: read, tokenised, encoded, split into training and validation.

    DataConfig ──► resolve_source (a file, a named dataset, or a prepared directory)
               ──► load_corpus ──► Vocab.build ──► ids (1-D long tensor, or a memmap for --prepared)
               ──► split_stream: selection | training | test, three disjoint ranges in stream order:
                   the test split is the last ``val_fraction`` of the stream (reported, never used for
                   a decision), the selection slice the first ``select_fraction`` (best weights, early
                   stopping, any tuning), training everything between
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import DataConfig
from ..errors import RnnlabError, UsageError
from .batching import Ids
from .corpus import load_corpus
from .prepared import load_prepared
from .registry import DATASETS, dataset_path
from .tokenizer import Tokenizer
from .vocab import Vocab


@dataclass
class PreparedData:
    vocab: Vocab
    train_ids: Ids  # (N_train,) long tensor, or a read-only memmap of unsigned ids for --prepared
    val_ids: Ids | None  # (N_test,): the test split, the last val_fraction of the stream, or None
    source: str
    default_prefixes: list[str]
    tokenizer: Tokenizer | None = None
    unknown: dict[str, int] = field(default_factory=dict)  # tokens a given vocabulary lacks -> count in the text
    select_ids: Ids | None = None  # (N_select,): the selection slice, the start of the stream, or None
    ranges: dict[str, list[int]] = field(default_factory=dict)  # {"select": [0, s], "train": [s, b], "test": [b, n]}
    chat: Any = None  # the chat export's cleaned messages and report (``data.chats.ChatText``), with --chat


def resolve_source(cfg: DataConfig) -> Path:
    if (cfg.path is None) == (cfg.dataset is None):
        raise UsageError("give either a text FILE or --dataset NAME")
    return Path(cfg.path) if cfg.path is not None else dataset_path(cfg.dataset)


def split_points(n: int, val_fraction: float, select_fraction: float = 0.0) -> tuple[int, int]:
    """Where a stream of ``n`` tokens splits: selection ``[0, s)``, training ``[s, b)``, test ``[b, n)``.

    The test split is the last ``int(n * val_fraction)`` tokens, the selection slice the first
    ``int(n * select_fraction)``: the training text runs up to the test split, as without a
    selection slice (a slice taken just before the test split was measured to cost tinyshakespeare
    0.15 nats: the test split's play begins there, and its speakers' names were never learnt).
    Every consumer (training, ``rnnlab eval``, the keyboard measurement, the keyboard's tuning)
    splits with this one function."""
    n_test, n_select = int(n * val_fraction), int(n * select_fraction)
    return min(n_select, n - n_test), n - n_test


def split_stream(ids: Ids, val_fraction: float, select_fraction: float = 0.0) -> tuple[Ids, Ids | None, Ids | None]:
    """(train, selection, test) ids by ``split_points`` (None for an empty range)."""
    s, b = split_points(len(ids), val_fraction, select_fraction)
    return ids[s:b], (ids[:s] if s > 0 else None), (ids[b:] if len(ids) > b else None)


def ranges_of(n: int, val_fraction: float, select_fraction: float = 0.0) -> dict[str, list[int]]:
    s, b = split_points(n, val_fraction, select_fraction)
    return {"select": [0, s], "train": [s, b], "test": [b, n]}


def prepare_data(cfg: DataConfig, vocab: Vocab | None = None, extend: bool = False) -> PreparedData:
    """Read, preprocess and tokenise the corpus, build the vocabulary (unless given), encode the
    stream and split off the last ``val_fraction`` of it for validation.

    With a given ``vocab`` (a base model's, for fine-tuning), tokens it lacks are counted in
    ``unknown`` and read as ``<unk>``, or with ``extend`` added to the end of a copy of it (most
    frequent first); a vocabulary without ``<unk>`` and without ``extend`` refuses them.

    With ``cfg.prepared`` the ids are a memory-mapped corpus from ``rnnlab prepare`` (not read into
    memory), and ``cfg.preset``, ``token``, ``min_freq`` and ``encoding`` are set to the ones it
    was prepared with."""
    cfg.validate()
    data = _prepared_data(cfg, vocab) if cfg.prepared is not None else _text_data(cfg, vocab, extend)
    data.tokenizer = Tokenizer(data.vocab, cfg.preset, cfg.token, cfg.encoding, cfg.errors)
    return data


def _text_data(cfg: DataConfig, vocab: Vocab | None, extend: bool = False) -> PreparedData:
    path = resolve_source(cfg)
    corpus = load_corpus(path, cfg.preset, cfg.token, cfg.encoding, cfg.errors, cfg.chat, cfg.speaker)
    unknown: dict[str, int] = {}
    if vocab is not None:
        unknown = dict(Counter(t for t in corpus.tokens if t not in vocab).most_common())
        if unknown and extend:
            vocab = vocab.extended(list(unknown), list(unknown.values()))
        elif unknown and vocab.unk is None:
            shown = ", ".join(repr(t) for t in list(unknown)[:5])
            raise RnnlabError(f"{path} has tokens the model's vocabulary lacks ({shown}) and the vocabulary has no "
                              f"<unk>; pass --extend-vocab to add them")
    if vocab is None:
        vocab = Vocab.build(corpus.tokens, min_freq=cfg.min_freq, separator="" if cfg.token == "char" else " ")
        if len(vocab) == 1 and vocab.unk is not None:
            raise UsageError(f"--min-freq {cfg.min_freq} leaves only <unk> in the vocabulary of {path}; "
                             f"lower --min-freq")
    tokens = corpus.tokens[:cfg.max_tokens] if cfg.max_tokens else corpus.tokens
    ids = torch.tensor(vocab.encode(tokens), dtype=torch.long)
    train_ids, select_ids, val_ids = split_stream(ids, cfg.val_fraction, cfg.select_fraction)
    if cfg.dataset is not None:
        prefixes = list(DATASETS[cfg.dataset].prefixes)
    else:
        prefixes = [vocab.separator.join(tokens[: (10 if cfg.token == "char" else 2)])]
    if cfg.preset == "letters":
        prefixes = [p.lower() for p in prefixes]
    return PreparedData(vocab, train_ids, val_ids, str(path), prefixes, unknown=unknown, select_ids=select_ids,
                        ranges=ranges_of(len(ids), cfg.val_fraction, cfg.select_fraction), chat=corpus.chat)


def _prepared_data(cfg: DataConfig, vocab: Vocab | None) -> PreparedData:
    p = load_prepared(cfg.prepared)
    if vocab is not None and vocab != p.vocab:
        raise RnnlabError(f"{cfg.prepared}: its vocabulary differs from the checkpoint's "
                          f"({len(p.vocab)} tokens, the checkpoint's {len(vocab)}); use the corpus the model was "
                          f"trained on")
    for name in ("preset", "token", "min_freq", "encoding"):
        setattr(cfg, name, p.meta[name])
    ids = p.ids[:cfg.max_tokens] if cfg.max_tokens else p.ids
    train_ids, select_ids, val_ids = split_stream(ids, cfg.val_fraction, cfg.select_fraction)
    prefix = p.vocab.decode(ids[: (10 if cfg.token == "char" else 2)].tolist())
    return PreparedData(p.vocab, train_ids, val_ids, f"{p.meta['source']} (prepared in {p.path})", [prefix],
                        select_ids=select_ids, ranges=ranges_of(len(ids), cfg.val_fraction, cfg.select_fraction))
