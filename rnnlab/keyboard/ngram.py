"""The n-gram baseline of the predictive keyboard: a word bigram model with interpolated
Kneser–Ney smoothing, and a keyboard that completes words with it.

Words follow rnnlab's keyboard rules (``rnnlab.suggest.word_spans``: a run of letters and digits,
apostrophes allowed inside, ``don't`` is one word; case kept: ``The`` and ``the`` are two words).
The model is built from a training text's word stream, separators ignored: the history of a word
is the word before it, wherever it stands (a line break or a full stop in between does not reset
it); the first word of the text has the history ``<s>``.

Probabilities (interpolated absolute discounting with Kneser–Ney's lower order, Chen & Goodman's
"interpolated Kneser–Ney" for two orders)::

    P(w | v) = max(c(v w) - D, 0) / c(v)  +  D * N1+(v .) / c(v) * P_low(w)     if c(v) > 0
    P(w | v) = P_low(w)                                                          otherwise

    P_low(w) = N1+(. w) / N1+(. .)          (``lower="kn"``: in how many contexts w follows)
    P_low(w) = c(w) / N                     (``lower="ml"``: plain unigram frequency)

``c(v w)`` bigram counts, ``c(v) = sum_w c(v w)``, ``N1+(v .)`` the number of distinct words after
``v``, ``N1+(. w)`` the number of distinct words before ``w``, and ``D = n1 / (n1 + 2 n2)`` from the
numbers of bigram types seen once and twice (Ney's estimate), unless given. Every word of the
vocabulary has P_low > 0 and the P(. | v) of one history sum to 1 over the vocabulary.

Completion (``BigramKeyboard.completions(context, partial, k)``): the words of the vocabulary that
start with ``partial`` (case-sensitive; a sorted word list and ``bisect``), ranked by P(w | the last
word of ``context``); ties go to the more frequent word, then to the alphabetically first, so the
answer is deterministic. Words never seen after ``v`` all score ``backoff(v) * P_low(w)``, so they
are taken in P_low order from a per-prefix list and only the words seen after ``v`` are scored one by
one (``completions`` costs O(matching followers of v + k), answers are memoised).
"""
from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache

from ..suggest import word_spans, words_of

BOS = "<s>"


class BigramModel:
    """Word bigram counts with interpolated Kneser–Ney probabilities (see the module docstring)."""

    def __init__(self, words: Iterable[str], discount: float | None = None, lower: str = "kn"):
        if lower not in ("kn", "ml"):
            raise ValueError(f"lower must be 'kn' or 'ml', got {lower!r}")
        words = list(words)
        self.lower = lower
        self.unigram: Counter[str] = Counter(words)
        self.bigram: dict[str, Counter[str]] = defaultdict(Counter)
        prev = BOS
        for w in words:
            self.bigram[prev][w] += 1
            prev = w
        self.bigram = dict(self.bigram)
        self.history_count = {v: sum(f.values()) for v, f in self.bigram.items()}  # c(v)
        n1 = sum(1 for f in self.bigram.values() for c in f.values() if c == 1)
        n2 = sum(1 for f in self.bigram.values() for c in f.values() if c == 2)
        self.discount = discount if discount is not None else (n1 / (n1 + 2 * n2) if n1 + n2 else 0.5)
        if not 0 <= self.discount <= 1:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        self.total = len(words)
        if lower == "kn":
            before: Counter[str] = Counter()
            for f in self.bigram.values():
                before.update(f.keys())  # N1+(. w)
            types = sum(before.values())  # N1+(. .)
            self.p_low = {w: before[w] / types for w in self.unigram}
        else:
            self.p_low = {w: c / self.total for w, c in self.unigram.items()} if self.total else {}
        self.vocab = sorted(self.unigram)  # for prefix ranges
        # per history: its followers sorted (for a prefix range), with their counts
        self._followers = {v: (sorted(f), [f[w] for w in sorted(f)]) for v, f in self.bigram.items()}
        self._low_cum: list[float] | None = None  # prefix sums of P_low over ``vocab`` (on first use)
        # memoised per model (not on the class, which would keep every model alive)
        self._by_low = lru_cache(maxsize=65536)(self._by_low_uncached)
        self.top = lru_cache(maxsize=65536)(self._top_uncached)

    # -- probabilities ------------------------------------------------------------------------

    def backoff(self, prev: str) -> float:
        """The weight of P_low after ``prev``: D * N1+(prev .) / c(prev) (1 for an unseen history)."""
        c = self.history_count.get(prev, 0)
        return self.discount * len(self.bigram[prev]) / c if c else 1.0

    def prob(self, word: str, prev: str = BOS) -> float:
        """P(word | prev); 0 for a word outside the vocabulary."""
        low = self.p_low.get(word, 0.0)
        c = self.history_count.get(prev, 0)
        if not c:
            return low
        return max(self.bigram[prev].get(word, 0) - self.discount, 0.0) / c + self.backoff(prev) * low

    def logprob(self, word: str, prev: str = BOS) -> float:
        p = self.prob(word, prev)
        return math.log(p) if p > 0 else -math.inf

    def prefix_mass(self, prev: str, prefix: str) -> float:
        """The sum of P(w | prev) over the vocabulary words that start with ``prefix`` (1 for "")."""
        if self._low_cum is None:
            self._low_cum = [0.0]
            for w in self.vocab:
                self._low_cum.append(self._low_cum[-1] + self.p_low[w])
        lo, hi = self._range(self.vocab, prefix)
        c = self.history_count.get(prev, 0)
        mass = (self.backoff(prev) if c else 1.0) * (self._low_cum[hi] - self._low_cum[lo])
        if c:
            words, counts = self._followers[prev]
            lo, hi = self._range(words, prefix)
            mass += sum(max(n - self.discount, 0.0) for n in counts[lo:hi]) / c
        return mass

    # -- completions ----------------------------------------------------------------------------

    def _range(self, words: Sequence[str], prefix: str) -> tuple[int, int]:
        lo = bisect.bisect_left(words, prefix)
        hi = bisect.bisect_left(words, prefix + "\U0010ffff") if prefix else len(words)
        return lo, hi

    def _by_low_uncached(self, prefix: str) -> tuple[str, ...]:
        """The vocabulary words starting with ``prefix``, by P_low (then count, then spelling)."""
        lo, hi = self._range(self.vocab, prefix)
        return tuple(sorted(self.vocab[lo:hi], key=lambda w: (-self.p_low[w], -self.unigram[w], w)))

    def _top_uncached(self, prev: str, prefix: str, k: int) -> tuple[tuple[str, float], ...]:
        """The ``k`` most probable words starting with ``prefix`` after ``prev``, with P(w | prev),
        best first; ties: the more frequent word, then the alphabetically first."""
        if k <= 0:
            return ()
        c = self.history_count.get(prev, 0)
        scored: list[tuple[float, str]] = []
        seen: set[str] = set()
        if c:
            bo = self.backoff(prev)
            words, counts = self._followers[prev]
            lo, hi = self._range(words, prefix)
            for w, n in zip(words[lo:hi], counts[lo:hi]):
                scored.append((max(n - self.discount, 0.0) / c + bo * self.p_low[w], w))
                seen.add(w)
        else:
            bo = 1.0
        taken = 0
        for w in self._by_low(prefix):  # the unseen ones in P_low order: the first k suffice
            if w in seen:
                continue
            scored.append((bo * self.p_low[w], w))
            taken += 1
            if taken >= k:
                break
        scored.sort(key=lambda sw: (-sw[0], -self.unigram[sw[1]], sw[1]))
        return tuple((w, p) for p, w in scored[:k])


def last_word(context: str) -> str:
    """The last whole word of ``context`` by the keyboard's rules, or ``<s>`` when there is none."""
    j = len(context)
    i = max(0, j - 64)
    while True:  # look at the tail only; widen the window if it cuts a word (or holds none)
        spans = word_spans(context[i:j])
        if spans and (spans[-1][0] > 0 or i == 0):
            s, e = spans[-1]
            return context[i + s:i + e]
        if i == 0:
            return BOS
        i = max(0, i - 256)


class BigramKeyboard:
    """The keyboard of ``rnnlab.keyboard``'s protocol on a ``BigramModel``: the words of the
    training text that start with the typed part, by P(word | previous word)."""

    name = "bigram"

    def __init__(self, model: BigramModel):
        self.model = model

    @classmethod
    def from_text(cls, text: str, **kwargs) -> BigramKeyboard:
        return cls(BigramModel(words_of(text), **kwargs))

    def completions(self, context: str, partial: str, k: int) -> list[str]:
        return [w for w, _ in self.model.top(last_word(context), partial, k)]

    def scored(self, context: str, partial: str, k: int) -> list[tuple[str, float]]:
        """``completions`` with each word's P(word | previous word)."""
        return list(self.model.top(last_word(context), partial, k))

    def completions_batch(self, queries: Sequence[tuple[str, str]], k: int,
                          streams: Sequence[str] | None = None) -> list[list[str]]:
        return [self.completions(c, p, k) for c, p in queries]
