"""The keyboard's word model: the training text's lexicon and an interpolated Kneser-Ney n-gram
over its words (a trigram by default), with the counts it was built from.

Words follow the keyboard's rules (``text.word_spans``: runs of letters and digits, apostrophes
inside, case kept). The model reads the training text's word stream, separators ignored, padded
at its start with ``order - 1`` start symbols ``<s>``: the history of a word is the ``order - 1``
words before it wherever they stand (a line break or a full stop does not reset it).

Probabilities (Chen & Goodman's interpolated Kneser-Ney, any order ``N`` in 1..3)::

    P_n(w | h) = max(c_n(h w) - D_n, 0) / S_n(h) + D_n * T_n(h) / S_n(h) * P_{n-1}(w | h')   if S_n(h) > 0
    P_n(w | h) = P_{n-1}(w | h')                                                              otherwise
    P_1(w)     = c_1(w) / sum_w' c_1(w')

``h`` the last ``n - 1`` words, ``h'`` its last ``n - 2``. At the top order ``c_N`` are the raw
counts; below it ``c_n(h w) = N1+(. h w)``, the number of distinct words seen before ``h w``
(Kneser-Ney's continuation counts; ``c_1(w) = N1+(. w)``). ``S_n(h) = sum_w c_n(h w)``,
``T_n(h)`` the number of distinct ``w`` with ``c_n(h w) > 0``, and ``D_n = n1 / (n1 + 2 n2)``
from the numbers of order-``n`` entries with count 1 and 2 (Ney), 0.5 when there are none.
Every word of the lexicon has ``P_1 > 0`` and the ``P(. | h)`` of any history sum to 1 over the
lexicon. A history word outside the lexicon has no counts: its orders are skipped.

Only the top order's counts are stored (``(M, N + 1)`` rows: N word ids and the count; the
start symbol is id ``len(vocab)``); every lower order is derived from them. Word ids follow the
spelling order of the vocabulary, so the words that start with a prefix are one id range
(``prefix_range``). A history's distribution over the whole lexicon (``dist``) is computed once
and memoised (every keystroke of a word asks about the same history): ``probs``, ``prefix_mass``
and ``top`` read it.
"""
from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .text import word_spans, words_of

BOS = "<s>"
MAX_ORDER = 3
DIST_CACHE_BYTES = 32 << 20  # the memoised distributions of recent histories


@dataclass
class _Level:
    """One order ``n >= 2``: its entries sorted by (history, word), and per history its sums."""
    key: np.ndarray  # (R,) int64: the history's ids, base len(vocab) + 1
    word: np.ndarray  # (R,) int64
    count: np.ndarray  # (R,) float64: raw counts (top order) or continuation counts
    hist: np.ndarray  # (H,) int64: the distinct history keys, sorted
    start: np.ndarray  # (H + 1,) int64: rows of history i are start[i]:start[i + 1]
    total: np.ndarray  # (H,) float64: S(h)
    distinct: np.ndarray  # (H,) float64: T(h)
    discount: float


class WordModel:
    """A lexicon and its interpolated Kneser-Ney n-gram (see the module docstring)."""

    def __init__(self, vocab: Sequence[str], grams: np.ndarray, order: int = MAX_ORDER):
        if not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be 1..{MAX_ORDER}, got {order}")
        self.vocab = list(vocab)
        self.order = order
        self.index = {w: i for i, w in enumerate(self.vocab)}
        V = len(self.vocab)
        self.bos = V
        grams = np.asarray(grams, dtype=np.int64).reshape(-1, order + 1)
        self.grams = grams  # (M, order + 1): the top order's ids and raw counts, as stored
        ids, counts = grams[:, :order], grams[:, order].astype(np.float64)
        # raw word counts (for ties and the lexicon's frequencies): every token is the last word of one top-order row
        self.counts = np.bincount(ids[:, -1], weights=counts, minlength=V + 1)[:V] if len(grams) else np.zeros(V)
        self.tokens = int(self.counts.sum())
        self.levels: list[_Level] = []  # orders 2..N, lowest first
        rows, level_counts = ids, counts
        for n in range(order, 1, -1):
            self.levels.insert(0, self._level(rows, level_counts))
            # the order below: its (h', w) pairs, counted by the distinct words before them
            pairs = rows[:, 1:]
            if len(pairs):
                pairs, level_counts = np.unique(pairs, axis=0, return_counts=True)
                level_counts = level_counts.astype(np.float64)
            rows = pairs
        c1 = np.bincount(rows[:, -1], weights=level_counts, minlength=V + 1)[:V] if len(rows) else np.zeros(V)
        self.p1 = c1 / c1.sum() if c1.sum() > 0 else c1  # (V,) P_1 over the lexicon
        # answers memoised per model: a history's whole distribution (every keystroke of a word
        # asks about the same history; at most DIST_CACHE_BYTES of them), and the best words
        self.dist = functools.lru_cache(maxsize=max(8, DIST_CACHE_BYTES // (8 * (V + 1))))(self._dist)
        self.top = functools.lru_cache(maxsize=16384)(self._top)

    def _level(self, rows: np.ndarray, counts: np.ndarray) -> _Level:
        base = len(self.vocab) + 1
        key = np.zeros(len(rows), dtype=np.int64)
        for j in range(rows.shape[1] - 1):  # the history's ids, most significant first
            key = key * base + rows[:, j]
        order = np.lexsort((rows[:, -1], key))
        key, word, counts = key[order], rows[order, -1], counts[order]
        hist, first = np.unique(key, return_index=True)
        start = np.append(first, len(key)).astype(np.int64)
        total = np.add.reduceat(counts, first) if len(first) else np.zeros(0)
        n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
        discount = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
        return _Level(key, word, counts, hist, start, total, np.diff(start).astype(np.float64), discount)

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_words(cls, words: Sequence[str], order: int = MAX_ORDER) -> WordModel:
        vocab = sorted(set(words))
        index = {w: i for i, w in enumerate(vocab)}
        stream = np.array([len(vocab)] * (order - 1) + [index[w] for w in words], dtype=np.int64)
        n = len(words)
        if n == 0:
            return cls(vocab, np.zeros((0, order + 1), dtype=np.int64), order)
        cols = np.stack([stream[j:j + n] for j in range(order)], axis=1)  # (n, order): each word with its history
        rows, counts = np.unique(cols, axis=0, return_counts=True)
        return cls(vocab, np.concatenate([rows, counts[:, None]], axis=1), order)

    @classmethod
    def from_text(cls, text: str, order: int = MAX_ORDER) -> WordModel:
        return cls.from_words(words_of(text), order)

    # -- lookups ----------------------------------------------------------------------------------
    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __len__(self) -> int:
        return len(self.vocab)

    def prefix_range(self, prefix: str) -> tuple[int, int]:
        """The ids ``[lo, hi)`` of the lexicon words that start with ``prefix`` (all of them for "")."""
        if not prefix:
            return 0, len(self.vocab)
        return bisect.bisect_left(self.vocab, prefix), bisect.bisect_left(self.vocab, prefix + "\U0010ffff")

    def history(self, context: str) -> tuple[int, ...]:
        """The ids of the ``order - 1`` words before the word being typed (``context`` is the text
        before it): the start symbol where the text has fewer words, -1 for a word outside the lexicon."""
        words = last_words(context, self.order - 1)
        return tuple([self.bos] * (self.order - 1 - len(words)) + [self.index.get(w, -1) for w in words])

    def _lookup(self, hist: tuple[int, ...]) -> tuple[tuple[_Level, int, int, int], ...]:
        """The orders at which ``hist`` (or its last words) was seen, lowest first: (order's
        entries, history index, first row, end row)."""
        base = len(self.vocab) + 1
        found = []
        for n, level in enumerate(self.levels, start=2):
            h = hist[len(hist) - (n - 1):]
            if any(x < 0 for x in h):  # a word outside the lexicon: never seen in a history
                continue
            key = 0
            for x in h:
                key = key * base + x
            i = int(np.searchsorted(level.hist, key))
            if i < len(level.hist) and level.hist[i] == key:
                found.append((level, i, int(level.start[i]), int(level.start[i + 1])))
        return tuple(found)

    def _dist(self, hist: tuple[int, ...]) -> np.ndarray:
        """``dist(hist)``: P(w | hist) for every lexicon word, (V,) float64 (the module docstring's
        recursion on the whole lexicon; read-only)."""
        p = self.p1
        for level, i, s, e in self._lookup(hist):
            c = np.zeros(len(self.vocab))
            c[level.word[s:e]] = level.count[s:e]
            S, D = level.total[i], level.discount
            p = np.maximum(c - D, 0.0) / S + D * level.distinct[i] / S * p
        p = p.copy() if p is self.p1 else p
        p.flags.writeable = False
        return p

    def probs(self, ids: np.ndarray, hist: tuple[int, ...]) -> np.ndarray:
        """P(w | hist) for each lexicon id of ``ids`` (see the module docstring)."""
        return self.dist(hist)[np.asarray(ids, dtype=np.int64)]

    def prob(self, word: str, context: str = "") -> float:
        """P(word | the words at the end of ``context``); 0 for a word outside the lexicon."""
        i = self.index.get(word)
        return 0.0 if i is None else float(self.probs(np.array([i]), self.history(context))[0])

    def prefix_mass(self, hist: tuple[int, ...], prefix: str) -> float:
        """The sum of P(w | hist) over the lexicon words that start with ``prefix`` (1 for "")."""
        if not prefix:
            return 1.0
        lo, hi = self.prefix_range(prefix)
        return float(self.dist(hist)[lo:hi].sum())

    def _top(self, hist: tuple[int, ...], prefix: str, k: int) -> tuple[tuple[str, float], ...]:
        """``top(hist, prefix, k)``: the ``k`` most probable lexicon words that start with
        ``prefix`` after ``hist``, with P(w | hist), best first; ties: the more frequent word, then
        the first in spelling order."""
        lo, hi = self.prefix_range(prefix)
        if k <= 0 or hi <= lo:
            return ()
        p = self.dist(hist)[lo:hi]
        if hi - lo > k:  # the k-th largest probability; every word at least as probable competes (ties)
            cut = np.partition(p, hi - lo - k)[hi - lo - k]
            ids = np.nonzero(p >= cut)[0] + lo
        else:
            ids = np.arange(lo, hi)
        p = p[ids - lo]
        best = np.lexsort((ids, -self.counts[ids], -p))[:k]
        return tuple((self.vocab[j], x) for j, x in zip(ids[best].tolist(), p[best].tolist()))


def last_words(context: str, n: int) -> list[str]:
    """The last ``n`` whole words of ``context`` by the keyboard's rules (fewer at its start)."""
    if n <= 0:
        return []
    j = len(context)
    i = max(0, j - 32 * n)
    while True:  # look at the tail only; widen the window if it cuts a word (or holds too few)
        spans = word_spans(context[i:j])
        if spans and spans[0][0] == 0 and i > 0:
            spans = spans[1:]  # the window may cut the first word
        if len(spans) >= n or i == 0:
            return [context[i + s:i + e] for s, e in spans[-n:]]
        i = max(0, i - 256 * n)


__all__ = ["BOS", "MAX_ORDER", "WordModel", "last_words"]
