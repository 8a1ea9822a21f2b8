"""Vocabulary: tokens <-> ids, deterministic, JSON round trip.

Order: ``<unk>`` (when present) is id 0, then reserved tokens, then every token with count
>= ``min_freq`` sorted by descending count; ties are broken by first occurrence in the corpus,
so two runs over the same text build the same vocabulary.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Iterable, Sequence

from ..errors import RnnlabError

UNK = "<unk>"


class Vocab:
    def __init__(self, tokens: Sequence[str], unk: str | None = UNK, separator: str = "",
                 counts: Sequence[int] | None = None):
        if len(set(tokens)) != len(tokens):
            raise RnnlabError("vocabulary has duplicate tokens; the vocab.json is corrupt")
        if unk is not None and (not tokens or tokens[0] != unk):
            raise RnnlabError("vocabulary: <unk> must be id 0; the vocab.json is corrupt")
        self.idx_to_token = list(tokens)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}
        self.unk = unk
        self.separator = separator  # "" joins characters, " " joins words
        self.counts = list(counts) if counts is not None else [0] * len(tokens)

    @classmethod
    def build(cls, tokens: Iterable[str], min_freq: int = 0, reserved: Sequence[str] = (),
              unk: str | None = UNK, separator: str = "") -> "Vocab":
        counter = Counter(tokens)  # insertion order = first occurrence
        ranked = sorted(counter.items(), key=lambda kv: -kv[1])  # stable: ties keep first occurrence
        head = ([unk] if unk is not None else []) + [t for t in reserved if t != unk]
        seen = set(head)
        body = [t for t, c in ranked if c >= min_freq and t not in seen]
        idx = head + body
        return cls(idx, unk=unk, separator=separator, counts=[counter.get(t, 0) for t in idx])

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __contains__(self, token: str) -> bool:
        return token in self.token_to_idx

    @property
    def unk_id(self) -> int | None:
        return None if self.unk is None else self.token_to_idx[self.unk]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids for ``tokens``; unknown tokens map to ``<unk>`` (KeyError without one)."""
        unk = self.unk_id
        if unk is None:
            return [self.token_to_idx[t] for t in tokens]
        get = self.token_to_idx.get
        return [get(t, unk) for t in tokens]

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The distinct tokens not in this vocabulary, in order of appearance."""
        return list(dict.fromkeys(t for t in tokens if t not in self.token_to_idx))

    def decode(self, ids: Iterable[int]) -> str:
        return self.separator.join(self.idx_to_token[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"tokens": self.idx_to_token, "unk": self.unk, "separator": self.separator,
                "counts": self.counts}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        """A vocabulary from JSON, every field checked (a damaged file fails with what is wrong)."""
        bad = "vocab.json is not a vocabulary"
        if not isinstance(d, dict) or not isinstance(d.get("tokens"), list):
            raise RnnlabError(f"{bad} (no 'tokens' list); the checkpoint is corrupt")
        tokens, unk, sep, counts = d["tokens"], d.get("unk"), d.get("separator", ""), d.get("counts")
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise RnnlabError(f"{bad} ('tokens' must be non-empty texts); the checkpoint is corrupt")
        if unk is not None and not isinstance(unk, str):
            raise RnnlabError(f"{bad} ('unk' must be a text or null); the checkpoint is corrupt")
        if sep not in ("", " "):
            raise RnnlabError(f"{bad} ('separator' must be \"\" or \" \"); the checkpoint is corrupt")
        if counts is not None and (not isinstance(counts, list) or len(counts) != len(tokens)
                                   or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                              for c in counts)):
            raise RnnlabError(f"{bad} ('counts' must be one count per token); the checkpoint is corrupt")
        return cls(tokens, unk=unk, separator=sep, counts=counts)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> "Vocab":
        return cls.from_dict(json.loads(s))

    def extended(self, tokens: Sequence[str], counts: Sequence[int] | None = None) -> "Vocab":
        """A copy with ``tokens`` (not already in it) appended as new ids, in the order given."""
        new = [t for t in dict.fromkeys(tokens) if t not in self.token_to_idx]
        extra = dict(zip(tokens, counts)) if counts is not None else {}
        return Vocab(self.idx_to_token + new, unk=self.unk, separator=self.separator,
                     counts=self.counts + [int(extra.get(t, 0)) for t in new])

    def difference(self, other: "Vocab") -> str:
        """What ``other`` has that this vocabulary lacks, or the reverse, in a few words."""
        new = [t for t in other.idx_to_token if t not in self.token_to_idx]
        gone = [t for t in self.idx_to_token if t not in other.token_to_idx]
        if new:
            return f"{new[0]!r} is new" + (f", {gone[0]!r} is gone" if gone else "")
        if gone:
            return f"{gone[0]!r} is gone"
        if self.idx_to_token != other.idx_to_token:
            return "the same tokens in another order (their counts changed)"
        return "the same tokens with other counts or settings"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, unk={self.unk!r})"
