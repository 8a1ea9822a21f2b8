"""The word search's mixing: which words are candidates, and how their probabilities combine.

For the text typed so far (the typed part of the current word ``p``, "" at a word start), the
candidates are

* the character beam's best ``beam_k`` words (``search.BeamSearch``),
* the word model's best ``lexicon_k`` words that start with ``p`` (``words.WordModel.top``),
* the ``cache_k`` words that start with ``p`` seen most often among the client's recent words
  (``recent.RecentWords``),

never ``p`` itself (accepting it would insert nothing). Each is scored *exactly* by the character
model (``wordsearch``: P(its characters after the text, then a word boundary)) and mixed (where
the tuned weight ``a`` of the character model is 0, neither the beam nor the exact scores run)::

    score(w) = [a * P_nn(w) / (1 - P_nn(p))  +  b * P_ng(w | h) / (M(p) - P_ng(p | h))
                + c * n(w) / (N(p) - n(p))] / (a + b + c)  *  (oov_factor if w is not in the lexicon)

with one set of weights ``a, b, c`` inside a word (``p`` not empty) and another at a word start
(next-word prediction, where the word model's history matters most),

``P_nn`` the character model's probability of the word (summed over the ways it was found: after
a space, a line break, ...), ``P_ng(w | h)`` the word model's with ``h`` the words before, ``M(p)``
its mass on the words starting with ``p``, ``n(w)`` the count of ``w`` among the recent words and
``N(p)`` that of all recent words starting with ``p``: each term is a distribution over the words
that extend ``p``. A term with no mass (no recent word starts with ``p``; no lexicon word does)
drops out and the weights of the others are renormalised. Words are ranked by score, ties by
spelling; the score is what ``Completion.prob`` reports.

``mix_score`` is written once for a single candidate (the server, in Python floats) and for every
recorded candidate at once (the tuning, ``rnnlab.keyboard.tune``, in numpy arrays): the weights
tuned are the weights served.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..fields import Settings, setting
from .words import WordModel

NO_RANK = 1 << 30  # a candidate's rank in a source it did not come from


@dataclass
class MixParams(Settings):
    """The word search's settings, tuned per model (``rnnlab words DIR``) and saved with it."""

    char_weight: float = setting(0.5, "inside a word: weight a of the character model's probability", min=0.0,
                                 max=1.0, cli=False)
    ngram_weight: float = setting(0.3, "inside a word: weight b of the word n-gram's", min=0.0, max=1.0, cli=False)
    cache_weight: float = setting(0.2, "inside a word: weight c of the recent words'", min=0.0, max=1.0, cli=False)
    next_char_weight: float = setting(0.5, "at a word start: weight a", min=0.0, max=1.0, cli=False)
    next_ngram_weight: float = setting(0.3, "at a word start: weight b", min=0.0, max=1.0, cli=False)
    next_cache_weight: float = setting(0.2, "at a word start: weight c", min=0.0, max=1.0, cli=False)
    oov_factor: float = setting(0.25, "multiplies the score of a word outside the lexicon", min=0.0, max=1.0,
                                cli=False)
    beam_k: int = setting(10, "candidates from the character beam", min=0, max=64, cli=False)
    lexicon_k: int = setting(20, "candidates from the word n-gram", min=0, max=256, cli=False)
    cache_k: int = setting(5, "candidates from the recent words", min=0, max=64, cli=False)

    def check(self) -> None:
        from ..errors import UsageError

        if sum(self.weights(True)) <= 0 or sum(self.weights(False)) <= 0:
            raise UsageError("the word search's weights are all 0 (inside a word or at a word start)")

    def weights(self, started) -> tuple:
        """(a, b, c) inside a word (``started`` true) or at a word start; ``started`` may be an array."""
        if started is True or started is False:
            return ((self.char_weight, self.ngram_weight, self.cache_weight) if started else
                    (self.next_char_weight, self.next_ngram_weight, self.next_cache_weight))
        return (self.char_weight * started + self.next_char_weight * (1 - started),
                self.ngram_weight * started + self.next_ngram_weight * (1 - started),
                self.cache_weight * started + self.next_cache_weight * (1 - started))

    def describe(self) -> str:
        return (f"weights (character model / n-gram / recent words) {'/'.join(f'{w:g}' for w in self.weights(False))} "
                f"at a word start, {'/'.join(f'{w:g}' for w in self.weights(True))} inside a word, out-of-lexicon "
                f"x{self.oov_factor:g}, candidates {self.beam_k} beam + {self.lexicon_k} n-gram + {self.cache_k} recent")


def mix_score(params: MixParams, lp_nn, p_ng, count, in_lex, nn_norm, ng_mass, n_cache, started, exp=math.exp):
    """The score of the module docstring, for one candidate (floats) or many (numpy arrays, with
    ``exp=np.exp``): ``lp_nn`` log P_nn(w), ``p_ng`` P_ng(w | h), ``count`` n(w), ``in_lex`` 1 or 0;
    per request ``nn_norm = 1 - P_nn(p)`` (> 0), ``ng_mass = M(p) - P_ng(p | h)``, ``n_cache = N(p) - n(p)``
    and ``started`` (the typed part is not empty: True/False, or 1/0 in an array)."""
    a, b, c = params.weights(started)
    b = b * (ng_mass > 1e-12)  # a term without mass drops out...
    c = c * (n_cache > 0)
    total = a + b + c
    s = (a * exp(lp_nn) / nn_norm + b * p_ng / (ng_mass + 1e-300) + c * count / (n_cache + (n_cache == 0)))
    s = s / (total + (total == 0))  # ...and the others share its weight
    return s * (in_lex + (1 - in_lex) * params.oov_factor)


def selected(params: MixParams, beam_rank, ng_rank, cache_rank, started):
    """Whether the settings' counts admit a candidate (its 0-based rank in each source, ``NO_RANK``
    if it did not come from it); ints or numpy arrays alike. Where the character model's weight is
    0 (inside a word or at a word start, ``started``) the beam proposes nothing: the search runs no
    beam and scores nothing with the character model there."""
    beam_k = params.beam_k * (params.weights(started)[0] > 0)
    return (beam_rank < beam_k) | (ng_rank < params.lexicon_k) | (cache_rank < params.cache_k)


@dataclass
class WordQuery:
    """What the word model and the recent words say about one request, before the character model
    scores anything: the typed part, the candidates they propose, the normalisers."""
    partial: str  # the typed part of the word, model text
    hist: tuple[int, ...]  # the word model's history ids
    ngram: list[tuple[str, float]]  # its best words for the partial, with P(w | h)
    ng_mass: float  # M(p) - P_ng(p | h)
    cache: Counter  # recent words that extend the partial -> count
    cache_order: list[str]  # the cache candidates, most frequent first
    n_cache: int  # N(p) - n(p)
    p_ng: dict[str, float] = field(default_factory=dict)  # P(w | h) of the candidates above (absent: not in the lexicon)

    def targets(self) -> list[str]:
        """The candidate words of the word model and the recent words (the character beam adds its own)."""
        words = dict.fromkeys([w for w, _ in self.ngram] + self.cache_order)
        words.pop(self.partial, None)
        return list(words)


def word_query(model: WordModel, context: str, partial: str, recent: list[str], params: MixParams) -> WordQuery:
    """The word model's and the recent words' side of a request: ``context`` the model text before
    the typed part ``partial``; ``recent`` the client's recent words (``RecentWords.words``)."""
    hist = model.history(context)
    ngram = model.top(hist, partial, params.lexicon_k + 1) if params.lexicon_k else ()
    ngram = [(w, p) for w, p in ngram if w != partial][:params.lexicon_k]  # (+ 1 above: the typed part may be one)
    mass = model.prefix_mass(hist, partial)
    counts = Counter([w for w in recent if w.startswith(partial)] if partial else recent)
    counts.pop(partial, None)
    order = [w for w, _ in counts.most_common(params.cache_k)] if params.cache_k else []
    p_ng = dict(ngram)
    rest = [w for w in order if w not in p_ng and w in model.index]
    typed = partial if partial and partial in model.index else None
    if rest or typed:
        ids = np.array([model.index[w] for w in rest + ([typed] if typed else [])])
        values = model.probs(ids, hist).tolist()
        p_ng.update(zip(rest, values))
        if typed:
            mass -= values[-1]
    return WordQuery(partial, hist, ngram, max(mass, 0.0), counts, order, sum(counts.values()), p_ng)


@dataclass
class Candidates:
    """One request's candidates with every feature the mixing reads (lists, one entry per word)."""
    words: list[str]  # model text
    appends: list[str]  # what to append to the text for each (the character model's best way)
    lp_nn: list[float]  # log P_nn, -inf if the character model never reached it
    p_ng: list[float]
    count: list[int]
    in_lex: list[int]  # 1 or 0
    beam_rank: list[int]
    ng_rank: list[int]
    cache_rank: list[int]
    nn_norm: float
    ng_mass: float
    n_cache: int
    started: bool  # inside a word (the typed part is not empty)

    def rank(self, params: MixParams, k: int) -> list[tuple[str, str, float]]:
        """The best ``k`` (word, append, score) under ``params``, best first, ties by spelling."""
        scored = []
        for j, w in enumerate(self.words):
            if selected(params, self.beam_rank[j], self.ng_rank[j], self.cache_rank[j], self.started):
                s = mix_score(params, self.lp_nn[j], self.p_ng[j], self.count[j], self.in_lex[j], self.nn_norm,
                              self.ng_mass, self.n_cache, self.started)
                if s > 0:
                    scored.append((-s, w, j))
        scored.sort()
        return [(w, self.appends[j], -s) for s, w, j in scored[:k]]


def candidates(model: WordModel, q: WordQuery, beam: list[tuple[str, str, float]], exact: dict[str, float],
               typed_lp: float) -> Candidates:
    """Gather one request's candidates: ``beam`` the character beam's finished words in order
    (word in model text, append, log-prob), ``exact`` the exact log-probs of the word model's and
    the cache's candidates (append -> log-prob, appended directly after the text), ``typed_lp`` the
    log-prob of the typed part as a whole word (-inf at a word start)."""
    lps: dict[str, dict[str, float]] = {}  # word -> {append: log-prob}
    beam_rank: dict[str, int] = {}
    for word, app, lp in beam:
        if word and word != q.partial:
            beam_rank.setdefault(word, len(beam_rank))
            lps.setdefault(word, {})[app] = lp
    n = len(q.partial)
    for w in q.targets():
        app = w[n:]
        d = lps.setdefault(w, {})
        if app in exact:
            d[app] = exact[app]
    ng_rank = {w: i for i, (w, _) in enumerate(q.ngram)}
    cache_rank = {w: i for i, w in enumerate(q.cache_order)}
    words, appends, lp_nn = [], [], []
    for w, d in lps.items():
        words.append(w)
        if d:
            best = max(d, key=d.get)
            appends.append(best)
            lp_nn.append(_logsumexp(list(d.values())) if len(d) > 1 else d[best])
        else:
            appends.append(w[n:])
            lp_nn.append(-math.inf)
    index = model.index
    p_ng = [q.p_ng.get(w, 0.0) for w in words]
    missing = [j for j, w in enumerate(words) if w in index and w not in q.p_ng]  # the beam's words
    if missing:
        values = model.probs(np.array([index[words[j]] for j in missing]), q.hist).tolist()
        for j, v in zip(missing, values):
            p_ng[j] = v
    norm = max(1.0 - math.exp(typed_lp), 1e-9) if typed_lp > -math.inf else 1.0
    return Candidates(words, appends, lp_nn, p_ng, [q.cache.get(w, 0) for w in words],
                      [1 if w in index else 0 for w in words], [beam_rank.get(w, NO_RANK) for w in words],
                      [ng_rank.get(w, NO_RANK) for w in words], [cache_rank.get(w, NO_RANK) for w in words],
                      norm, q.ng_mass, q.n_cache, bool(q.partial))


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in xs))


__all__ = ["Candidates", "MixParams", "NO_RANK", "WordQuery", "candidates", "mix_score", "selected", "word_query"]
