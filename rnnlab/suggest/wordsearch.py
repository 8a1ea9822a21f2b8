"""One request's word search inside the batched search (``search.Scheduler``): the candidates of
the word model and the recent words, scored exactly by the character model, row by row.

    start:  WordQuery (n-gram + recent words) -> targets: the appends to score, as a trie of prefixes
    each step, with the log-probs of this search's rows (beams first, then candidate rows):
        record  a candidate that ends at a row: log P(its characters) + log P(any boundary next)
        expand  the rows of the next depth that lead to a candidate (not already a beam)
        keep    the ones that can still reach the top k (the bound below), with their log-probs (they
                ride in the next model step with every request's rows: scoring a row's remaining
                characters in a call of their own, for rows with one candidate left, was measured
                slower per keystroke than these batched steps)
    answer: ``mix.candidates`` from the beam's words and the targets, the best k by ``mix`` score

The bound (exact: the top k are those of scoring every candidate to its end). A candidate ``w``
scores ``m_w * (rest_w + A / (1 - P_nn(p)) * P_nn(w))`` with ``m_w`` the out-of-lexicon factor or
1, ``rest_w`` its n-gram and recent-word terms and ``A`` the character model's weight (all divided
by the weights' sum). Below a row whose prefix has probability ``P``, every candidate has
``P_nn(w) <= P + B0`` (``B0``: the probability that the text goes on with a boundary, the only
other way the beam can reach the word; 0 inside a word), so the row's candidates score at most
``max m_w rest_w + max m_w * A / (1 - P_nn(p)) * (P + B0)``. Every candidate scores at least its
``m_w * rest_w`` plus what is known exactly of its ``P_nn``; a row whose bound is below the k-th
best of those lower bounds cannot reach the top k and is not expanded. Tuning records every
candidate to its end (``engine.collect``): no pruning then.
"""
from __future__ import annotations

import math

from .mix import Candidates, MixParams, WordQuery, candidates
from .text import is_word_char


def _word_of(app: str, partial: str, started: bool) -> str:
    """The word a beam's append makes: the typed part + the append inside a word; at a word start
    the append without the boundaries it may start with (" the" -> "the")."""
    if started:
        return partial + app
    i = 0
    while i < len(app) and not is_word_char(app[i]):
        i += 1
    return app[i:]


class WordJob:
    """The word search's side of one request (see the module docstring)."""

    def __init__(self, engine, query: WordQuery, started: bool, k: int):
        self.engine, self.query, self.started, self.k = engine, query, started, k
        params: MixParams = engine.params
        n, longest, char_ids = len(query.partial), engine.max_word_length, engine.char_ids
        a, b, c = params.weights(started)
        words = [w for w in query.targets() if len(w) - n <= longest and all(ch in char_ids for ch in w[n:])] \
            if a > 0 else []  # the character model's weight 0: its scores are never read
        self.forced: list[tuple[str, float]] = []  # (prefix, log-prob): candidate rows after the beams
        self.exact: dict[str, float] = {}  # append -> log P(it, then a boundary)
        self.b0 = 0.0  # P(the text goes on with a boundary), at a word start
        self.prune = not engine.collect
        # the bound's parts: per candidate m_w * rest_w and m_w, per prefix their maxima over the candidates below
        b = b if query.ng_mass > 1e-12 else 0.0
        c = c if query.n_cache > 0 else 0.0
        total = a + b + c
        self.weight = a / total if total else 0.0  # A
        self.lexicon, self.oov = engine.words.model.index, params.oov_factor
        self.low: dict[str, tuple[float, float]] = {}  # append -> (m_w, m_w * rest_w)
        self.children: dict[str, dict[str, None]] = {}  # prefix -> its next characters toward a candidate
        self.top: dict[str, tuple[float, float]] = {}  # prefix -> (max m_w, max m_w * rest_w) below it
        for w in words:
            app = w[n:]
            rest = (b * query.p_ng.get(w, 0.0) / query.ng_mass if b else 0.0) + \
                (c * query.cache.get(w, 0) / query.n_cache if c else 0.0)
            m = 1.0 if w in self.lexicon else self.oov
            rest = m * rest / total if total else 0.0
            self.low[app] = (m, rest)
            for i in range(len(app) + 1):
                pre = app[:i]
                mm, rr = self.top.get(pre, (0.0, 0.0))
                self.top[pre] = (m if m > mm else mm, rest if rest > rr else rr)
                if i < len(app):
                    self.children.setdefault(pre, {})[app[i]] = None
        self.targets = set(self.low)
        if started and a > 0:
            self.targets.add("")  # the typed part as a whole word: its P_nn normalises the others

    # -- each step ----------------------------------------------------------------------------------
    def rows(self, beams: list[tuple[str, float, bool]]) -> list[tuple[str, float]]:
        """(prefix, log-prob) of the request's rows: its beams, then its candidate rows."""
        return [(app, lp) for app, lp, _ in beams] + self.forced

    def record(self, rows: list[tuple[str, float]], end_lp: list[float], depth: int) -> None:
        """The candidates that end at these rows: their prefix, then any boundary (``end_lp``)."""
        if depth == 0 and not self.started:
            self.b0 = math.exp(end_lp[0])  # the root row: P(a boundary first)
        targets = self.targets
        for (prefix, lp), e in zip(rows, end_lp):
            if prefix in targets:
                self.exact[prefix] = lp + e

    def expand(self, rows: list[tuple[str, float]], kept: list[tuple[int, int]]) -> list[tuple[int, int, str, float]]:
        """The rows of the next depth that lead toward a candidate and are not beams already:
        (parent row, token, prefix, parent's log-prob)."""
        beams = set(kept)
        char_ids, children = self.engine.char_ids, self.children
        out = []
        for r, (prefix, lp) in enumerate(rows):
            for ch in children.get(prefix, ()):
                col = char_ids[ch]
                if (r, col) not in beams:
                    out.append((r, col, prefix + ch, lp))
        return out

    def keep(self, extra: list[tuple[int, int, str, float]], picked: list[float],
             finished: list[tuple[str, float]]) -> list[int]:
        """The candidate rows of the next depth (``extra`` with their characters' log-probs
        ``picked``) that can still reach the top k: their indices into ``extra``."""
        rows = [(prefix, lp + p) for (_, _, prefix, lp), p in zip(extra, picked)]
        keep = list(range(len(rows)))
        if self.prune and rows and len(self.low) + len(finished) >= self.k:
            floor = self.floor(finished)
            if floor > 0:
                scale = self.weight / self.norm()
                top = self.top
                keep = [i for i, (prefix, lp) in enumerate(rows)
                        if top[prefix][1] + top[prefix][0] * scale * (math.exp(lp) + self.b0) >= floor * (1 - 1e-9)]
        self.forced = [rows[i] for i in keep]
        return keep

    def norm(self) -> float:
        """1 - P_nn(the typed part as a whole word) (1 at a word start)."""
        typed = self.exact.get("") if self.started else None
        return max(1.0 - math.exp(typed), 1e-9) if typed is not None else 1.0

    def floor(self, finished: list[tuple[str, float]]) -> float:
        """The k-th best lower bound of a candidate's score (0 with fewer than k candidates)."""
        scale = self.weight / self.norm()
        best: dict[str, float] = {}
        for app, (m, rest) in self.low.items():
            lp = self.exact.get(app)
            best[app] = rest + (m * scale * math.exp(lp) if lp is not None else 0.0)
        q = self.query
        for app, lp in finished:  # the beam's words found so far (their n-gram terms left out: still a lower bound)
            word = _word_of(app, q.partial, self.started)
            if word == q.partial or not word:
                continue
            key = word[len(q.partial):]
            m = 1.0 if word in self.lexicon else self.oov
            best[key] = max(best.get(key, 0.0), m * scale * math.exp(lp))
        if len(best) < self.k:
            return 0.0
        return sorted(best.values(), reverse=True)[self.k - 1]

    # -- the answer -----------------------------------------------------------------------------------
    def candidates(self, finished: list[tuple[str, float]]) -> Candidates:
        """Every candidate with its features (``mix.candidates``), from the beam's words and the exact scores."""
        q = self.query
        beam = [(_word_of(app, q.partial, self.started), app, lp) for app, lp in finished]
        typed = self.exact.get("", -math.inf) if self.started else -math.inf
        return candidates(self.engine.words.model, q, beam, self.exact, typed)


__all__ = ["WordJob"]
