"""The word model's files in a run directory, beside the checkpoint it was built for.

    DIR/words.json          format, the data it was built from (the checkpoint's text settings and
                            the range of the training split), the vocabulary, the served search's
                            tuned settings (``params``), the fair n-gram keyboard's (``baseline``),
                            and how they were tuned (``tuning``)
    DIR/words.safetensors   the top order's counts, an (M, order + 1) int64 tensor ``grams``

Both carry one ``save_id`` (a crash between the two writes is detected) and are written
atomically; nothing is ever unpickled. ``find_words`` looks in the checkpoint's directory and,
for ``DIR/best`` and ``DIR/checkpoints/NAME``, in the run directory above it, and uses a word
model only if it was built from the same text settings as the checkpoint's.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RnnlabError
from ..io import atomic_write, atomic_write_json, read_json
from .mix import MixParams
from .words import MAX_ORDER, WordModel

FORMAT = "rnnlab-words"
JSON_NAME, TENSORS_NAME = "words.json", "words.safetensors"
# the text settings a word model must share with its checkpoint (DataConfig fields)
TEXT_SETTINGS = ("path", "dataset", "prepared", "chat", "speaker", "preset", "token", "max_tokens", "encoding",
                 "errors", "val_fraction", "select_fraction")


@dataclass
class Words:
    """A word model with the search settings tuned for one checkpoint."""
    model: WordModel
    params: MixParams = field(default_factory=MixParams)  # the served search
    baseline: MixParams = field(default_factory=lambda: MixParams(char_weight=0.0, next_char_weight=0.0, beam_k=0))  # the fair n-gram keyboard
    meta: dict = field(default_factory=dict)  # data, built_from, tuning
    path: Path | None = None


def text_settings(data_config) -> dict:
    """The fields of a ``DataConfig`` that fix the text a word model is built from."""
    d = data_config.to_dict()
    return {k: d.get(k) for k in TEXT_SETTINGS}


def save_words(run_dir: str | Path, words: Words) -> Path:
    """Write ``words.safetensors`` then ``words.json`` into ``run_dir``."""
    from safetensors.numpy import save as st_save

    out = Path(run_dir)
    save_id = uuid.uuid4().hex
    m = words.model
    atomic_write(out / TENSORS_NAME, st_save({"grams": np.ascontiguousarray(m.grams, dtype=np.int64)},
                                             metadata={"format": FORMAT, "save_id": save_id}))
    atomic_write_json(out / JSON_NAME, {
        "format": FORMAT, "version": 1, "save_id": save_id, "order": m.order, "tokens": m.tokens,
        "params": words.params.to_dict(), "baseline": words.baseline.to_dict(), **words.meta,
        "vocab": m.vocab,
    })
    return out / JSON_NAME


def load_words(run_dir: str | Path) -> Words:
    """Read a word model written by ``save_words``; a damaged one is a one-line ``RnnlabError``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    d = Path(run_dir)
    meta = read_json(d / JSON_NAME, "word model")
    where = d / JSON_NAME
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RnnlabError(f"{where}: not an rnnlab word model; rebuild it with `rnnlab words {d}`")
    order, vocab = meta.get("order"), meta.get("vocab")
    if not isinstance(order, int) or not 1 <= order <= MAX_ORDER or not isinstance(vocab, list) \
            or not all(isinstance(w, str) for w in vocab) or any(a >= b for a, b in zip(vocab, vocab[1:])):
        raise RnnlabError(f"{where}: its order or vocabulary is damaged; rebuild it with `rnnlab words {d}`")
    try:
        tensors = st_load((d / TENSORS_NAME).read_bytes())
        from safetensors import safe_open

        with safe_open(str(d / TENSORS_NAME), framework="numpy") as f:
            save_id = (f.metadata() or {}).get("save_id")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RnnlabError(f"{d / TENSORS_NAME}: cannot read the word counts ({e}); rebuild them with "
                          f"`rnnlab words {d}`") from None
    if save_id != meta.get("save_id"):
        raise RnnlabError(f"{d}: {JSON_NAME} and {TENSORS_NAME} come from different saves; rebuild them with "
                          f"`rnnlab words {d}`")
    grams = tensors.get("grams")
    if grams is None or grams.ndim != 2 or grams.shape[1] != order + 1 or (len(grams) and (
            grams[:, :order].min() < 0 or grams[:, :order].max() > len(vocab) or grams[:, order].min() < 1)):
        raise RnnlabError(f"{d / TENSORS_NAME}: the word counts do not fit the vocabulary; rebuild them with "
                          f"`rnnlab words {d}`")
    params = MixParams.from_dict(meta.get("params", {}))
    baseline = MixParams.from_dict(meta.get("baseline", {"char_weight": 0.0, "next_char_weight": 0.0, "beam_k": 0}))
    rest = {k: v for k, v in meta.items() if k not in ("format", "version", "save_id", "order", "tokens", "params",
                                                       "baseline", "vocab")}
    return Words(WordModel(vocab, grams, order), params, baseline, rest, d)


def find_words(ckpt_dir: str | Path, data_config) -> Words | None:
    """The word model built for the checkpoint in ``ckpt_dir`` (its run directory's), or None."""
    d = Path(ckpt_dir)
    want = text_settings(data_config)
    for cand in (d, d.parent, d.parent.parent):
        if (cand / JSON_NAME).is_file():
            words = load_words(cand)
            if words.meta.get("data") == want:
                return words
            if cand == d:
                raise RnnlabError(f"{cand / JSON_NAME} was built from other text settings than the checkpoint's; "
                                  f"rebuild it with `rnnlab words {d}`")
    return None


__all__ = ["FORMAT", "JSON_NAME", "TENSORS_NAME", "Words", "find_words", "load_words", "save_words", "text_settings"]
