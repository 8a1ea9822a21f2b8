"""How many keystrokes a predictive keyboard saves: a simulated user types a text with it.

Protocol (``evaluate_keyboard``)
--------------------------------
The text is split into *words* and *separators* by rnnlab's keyboard rules
(``rnnlab.suggest.word_spans``: a word is a run of word characters, ``is_word_char`` — letters
and digits — with apostrophes allowed inside it, each followed by a word character: ``don't`` is
one word, ``'tis`` is the separator ``'`` and the word ``tis``, ``dogs'`` the word ``dogs`` and the
separator ``'``; everything else — spaces, punctuation, line breaks — is a separator). Case is
kept: ``The`` and ``the`` are different words.

The user types the text from its first character to its last:

* every separator character costs one keystroke (separators are never suggested);
* a word ``w`` of ``L`` characters is typed character by character; *before each* of its
  keystrokes — with ``i = 0 .. L-1`` of its characters typed, including ``i = 0`` right after the
  separator (next-word prediction) — the keyboard is asked for its top-``k`` completions of the word
  being typed, ``keyboard.completions(context, w[:i], k)``, where ``context`` is all the text before
  the word (separators included). If ``w`` is among the words shown (exact string, case included),
  the user accepts it with ONE keystroke, which inserts the rest of the word and nothing else
  (the separator after it is then typed as usual), and the word is done. Otherwise the user types
  ``w[i]`` (one keystroke). A word nobody suggests costs ``L`` keystrokes; the cheapest word costs 1.

Because accepting a word inserts exactly the characters the user would have typed, the text the
keyboard sees at any point does not depend on what the user did before, only on the position: the
answer shown at every position is the same for every ``k``. So one pass asks for ``max(ks)``
completions at each position and reads the top-``k`` of every ``k`` from it: the cost of a word at
``k`` is ``1 + (the first i at which w ranks < k)``, or ``L``. (For rnnlab's engine asking for 5
and reading the first 3 is not exactly asking for 3, since its search width grows with ``k``.)

Reported (``evaluate_keyboard`` returns a dict):

* ``ksr[k]`` keystroke savings rate ``1 - keystrokes / characters`` and ``keystrokes_per_char[k]``
  (``keystrokes / characters``), for each ``k`` in ``ks``; ``characters`` counts every character of
  the text, separators included;
* ``next_word_top1``, ``next_word_top3``: the fraction of words that are the top-1 / among the
  top-3 suggestions at ``i = 0`` (before their first character);
* ``completion_recall[n]`` for n = 1, 2, 3: among the words longer than ``n`` characters, the
  fraction in the top-3 once ``n`` characters are typed (``recall_k``, default 3; None when no
  word is that long);
* ``words``, ``characters``, ``word_chars``, ``separator_chars``, ``queries`` (keyboard calls),
  ``seconds`` (wall-clock of the run).

The keyboard is asked only as often as needed: at each position of a word until the word has been
the top-1 suggestion *and* the completion-recall positions (up to ``max(recall_chars)`` typed
characters) have been asked, so every figure above is exact (``full_scan=True`` asks at every
position).

Speed: the text is cut at word starts into ``segments`` pieces that are typed concurrently, one
query per piece per round, and each round goes to the keyboard in one ``completions_batch`` call,
with one ``stream`` id per piece (rnnlab's engine keeps each stream's model state, so one more
character costs one model step, and batches the model calls of all streams). Each piece sees as
context up to ``preamble_chars`` characters of the text before it (cut after a space or a
line break), so the figures hardly depend on the number of pieces.

Keyboards (``Keyboard``): anything with ``completions(context, partial, k) -> list[str]`` (the
whole words shown, best first) and ``completions_batch(queries, k, streams) -> list[list[str]]``
(``queries`` a list of ``(context, partial)``). ``RnnlabKeyboard`` wraps a ``SuggestEngine``;
``ngram.NgramKeyboard`` is the fair n-gram baseline, ``presage.PresageKeyboard`` Presage;
``compare`` runs two keyboards on one text.
"""
from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..config import MAX_TEXT_CHARS, SuggestConfig
from ..suggest import SuggestEngine, SuggestRequest, load_engine, word_spans

DEFAULT_KS = (1, 3, 5)
RECALL_CHARS = (1, 2, 3)


# -- words and separators ----------------------------------------------------------------------

# ``word_spans(text)``: the (start, end) of every word of ``text``. A word starts with a word
# character and goes on through word characters and inner characters (apostrophes) each followed by
# a word character: ``split_partial_word``'s rules, written once in ``rnnlab.suggest``.


# -- keyboards ----------------------------------------------------------------------------------

@runtime_checkable
class Keyboard(Protocol):
    """What the simulation needs of a keyboard."""

    def completions(self, context: str, partial: str, k: int) -> list[str]:
        """The top-``k`` whole words that complete ``partial`` (the typed part of the word; "" at a
        word start) after ``context`` (the text before the word), best first."""
        ...

    def completions_batch(self, queries: Sequence[tuple[str, str]], k: int,
                          streams: Sequence[str] | None = None) -> list[list[str]]:
        """``completions`` for many ``(context, partial)`` queries; ``streams[i]`` names the typist
        of query i (consecutive queries of one stream extend the same text)."""
        ...


class FixedKeyboard:
    """A keyboard with canned answers, for tests: ``answers(context, partial) -> list[str]``."""

    name = "fixed"

    def __init__(self, answers: Callable[[str, str], Sequence[str]]):
        self.answers = answers
        self.calls: list[tuple[str, str, int]] = []

    def completions(self, context: str, partial: str, k: int) -> list[str]:
        self.calls.append((context, partial, k))
        return list(self.answers(context, partial))[:k]

    def completions_batch(self, queries, k, streams=None):
        return [self.completions(c, p, k) for c, p in queries]


class RnnlabKeyboard:
    """rnnlab's ``SuggestEngine`` as a keyboard: the words of its completions (``Completion.word``:
    the typed part plus the appended characters; at a word start, the next word), one engine
    client per stream, every batch of queries answered by ``engine.suggest_batch``. ``from_checkpoint``
    is the engine as it is served (``rnnlab.suggest.load_engine``: with the word search when the
    checkpoint has a word model)."""

    name = "rnnlab"

    def __init__(self, engine: SuggestEngine, client_prefix: str = "kb"):
        self.engine, self.client_prefix = engine, client_prefix

    @classmethod
    def from_checkpoint(cls, checkpoint, device: str = "cpu", log=None, **search) -> RnnlabKeyboard:
        """The served engine of a checkpoint (a directory or a loaded ``Checkpoint``); ``search``:
        ``SuggestConfig`` fields (``beam_width``, ``words``, ...)."""
        from ..checkpoint import load_checkpoint

        ck = load_checkpoint(checkpoint, device) if isinstance(checkpoint, (str, Path)) else checkpoint
        return cls(load_engine(ck, SuggestConfig(**search), log=log))

    def suggestions(self, queries: Sequence[tuple[str, str]], k: int, streams: Sequence[str] | None = None):
        """The engine's ``Suggestions`` for each query (its completions with probabilities)."""
        clients = [f"{self.client_prefix}:{s}" for s in streams] if streams is not None else [""] * len(queries)
        return self.engine.suggest_batch([SuggestRequest(c + p, k, client) for (c, p), client in zip(queries, clients)])

    def completions(self, context: str, partial: str, k: int) -> list[str]:
        return self.completions_batch([(context, partial)], k)[0]

    def completions_batch(self, queries, k, streams=None):
        return [[c.word for c in s.completions] for s in self.suggestions(queries, k, streams)]

    def close(self) -> None:
        self.engine.close()


class AdaptiveKeyboard:
    """rnnlab's keyboard with online adaptation (``AdaptiveSuggester``, as ``rnnlab serve --adapt``
    runs it): each stream is one client whose copy of the model learns what it has typed. Answers
    one query at a time (no batching across clients)."""

    name = "rnnlab-adapt"

    def __init__(self, suggester, client_prefix: str = "kb"):
        self.suggester, self.client_prefix = suggester, client_prefix

    def completions(self, context: str, partial: str, k: int) -> list[str]:
        return self.completions_batch([(context, partial)], k)[0]

    def completions_batch(self, queries, k, streams=None):
        streams = streams if streams is not None else [""] * len(queries)
        return [[c.word for c in self.suggester.suggest(c + p, k, f"{self.client_prefix}:{s}").completions]
                for (c, p), s in zip(queries, streams)]

    def close(self) -> None:
        self.suggester.close()


# -- the simulation -------------------------------------------------------------------------------

@dataclass
class _Piece:
    """One concurrently typed piece of the text: its words and where its context starts."""
    stream: str
    context_start: int  # in the full text (history + text)
    words: list[tuple[int, int]]  # spans in the full text
    w: int = 0  # the word being typed
    i: int = 0  # its characters typed so far
    top1_at: int | None = None  # the first position where the word was the top-1 suggestion
    ranks: list = field(default_factory=list)  # the word's rank at each asked position (None: absent)


def _cut_points(text: str, spans: list[tuple[int, int]], segments: int) -> list[int]:
    """Indices into ``spans``: where each piece's words begin (about equal numbers of characters)."""
    if not spans:
        return [0]
    cuts, n = [0], len(text)
    starts = [s for s, _ in spans]
    for j in range(1, segments):
        w = bisect.bisect_left(starts, j * n // segments)
        if w < len(spans) and w > cuts[-1]:
            cuts.append(w)
    return cuts


def _context_start(full: str, at: int, preamble_chars: int) -> int:
    """Where a piece's context starts: ``preamble_chars`` before ``at``, moved forward to just after
    the next space or line break so that it does not start inside a word."""
    if preamble_chars <= 0 or at == 0:
        return at
    lo = max(0, at - preamble_chars)
    if lo == 0:
        return 0
    j = min((x for x in (full.find(" ", lo, at), full.find("\n", lo, at)) if x >= 0), default=at - 1)
    return j + 1


def evaluate_keyboard(keyboard: Keyboard, text: str, ks: Sequence[int] = DEFAULT_KS, *, history: str = "",
                      segments: int = 48, preamble_chars: int = 300, recall_chars: Sequence[int] = RECALL_CHARS,
                      recall_k: int = 3, full_scan: bool = False, max_words: int | None = None,
                      record: bool = False, progress: Callable[[int, int], None] | None = None,
                      observe: Callable[[int, int, int, str, list[str]], None] | None = None,
                      deadline: float | None = None) -> dict[str, Any]:
    """Type ``text`` with ``keyboard`` by the protocol of the module docstring; the figures as a dict.

    ``history``: text typed before ``text`` (context only, not counted). ``segments``: pieces typed
    concurrently. ``max_words``: type only the text up to the end of its first ``max_words`` words
    (the characters after them are not counted). ``record``: add ``details``, per word
    ``(word, start in text, ranks by position)`` (rank 0 = top-1, None = not among the ``max(ks)``
    shown; positions not asked are absent), and ``separators_before`` (per word, the separator
    characters between it and the word before it in the text) and ``trailing`` (after the last word).
    ``progress(words done, words)`` is called every round; ``observe(j, word start in text, typed
    characters, target word, words shown)`` after every batch, for each of its queries j in order.
    ``deadline`` (a ``time.perf_counter()`` value): stop asking once it passes; the figures are
    then those of the words settled by then (with the separators before each), ``complete`` False.
    """
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    kmax = max(ks[-1], recall_k, 3)
    full = history + text
    off = len(history)
    spans = word_spans(text)
    if max_words is not None and len(spans) > max_words:
        spans = spans[:max_words]
        text = text[:spans[-1][1]]
        full = history + text
    n_chars = len(text)
    spans_full = [(s + off, e + off) for s, e in spans]
    cuts = _cut_points(text, spans, max(1, segments))
    pieces = []
    for j, c in enumerate(cuts):
        end = cuts[j + 1] if j + 1 < len(cuts) else len(spans)
        if c >= end:
            continue
        start = off if j == 0 else spans_full[c][0]  # the first piece also types the text's leading separators
        pieces.append(_Piece(str(j), _context_start(full, start, preamble_chars), spans_full[c:end]))
    need_until = max(recall_chars) if recall_chars else 0
    word_cost = {k: 0 for k in ks}
    nw_hits = {1: 0, 3: 0}
    rec_hits = {n: 0 for n in recall_chars}
    rec_total = {n: 0 for n in recall_chars}
    details: list[tuple[str, int, list]] = []
    words_done = queries = 0
    t0 = time.perf_counter()
    active = [p for p in pieces if p.words]
    while active and (deadline is None or time.perf_counter() < deadline):
        batch = []
        for p in active:
            s, e = p.words[p.w]
            if s + p.i - p.context_start > MAX_TEXT_CHARS:  # a long piece: its context starts again nearer
                p.context_start = _context_start(full, s, preamble_chars)
            context, partial = full[p.context_start:s], full[s:s + p.i][-MAX_TEXT_CHARS:]  # (a word that long: cut)
            batch.append((context[max(0, len(context) + len(partial) - MAX_TEXT_CHARS):], partial))
        answers = keyboard.completions_batch(batch, kmax, [p.stream for p in active])
        queries += len(batch)
        still = []
        for j, (p, ans) in enumerate(zip(active, answers)):
            s, e = p.words[p.w]
            word, L = full[s:e], e - s
            shown = list(ans)[:kmax]
            rank = shown.index(word) if word in shown else None
            p.ranks.append(rank)
            if observe is not None:
                observe(j, s - off, p.i, word, shown)
            if rank == 0 and p.top1_at is None:
                p.top1_at = p.i
            done = p.i + 1 >= L or (not full_scan and p.top1_at is not None and p.i >= min(need_until, L - 1))
            if not done:
                p.i += 1
                still.append(p)
                continue
            # the word is settled: its cost at each k, and its recall figures
            for k in ks:
                first = next((i for i, r in enumerate(p.ranks) if r is not None and r < k), None)
                word_cost[k] += L if first is None else first + 1
            r0 = p.ranks[0]
            nw_hits[1] += r0 == 0
            nw_hits[3] += r0 is not None and r0 < 3
            for n in recall_chars:
                if L > n:
                    rec_total[n] += 1
                    r = p.ranks[n]
                    rec_hits[n] += r is not None and r < recall_k
            details.append((word, s - off, p.ranks))
            words_done += 1
            p.w, p.i, p.top1_at, p.ranks = p.w + 1, 0, None, []
            if p.w < len(p.words):
                still.append(p)
        active = still
        if progress is not None:
            progress(words_done, len(spans))
    seconds = time.perf_counter() - t0
    # the text typed: every settled word with the separators before it (all of the text when complete)
    details.sort(key=lambda d: d[1])
    ends = {s: e for s, e in spans}
    prev_end = dict(zip((s for s, _ in spans), [0] + [e for _, e in spans[:-1]]))
    seps = [start - prev_end[start] for _, start, _ in details]
    complete = len(details) == len(spans)
    trailing = n_chars - (spans[-1][1] if spans else 0) if complete else 0
    word_chars = sum(ends[start] - start for _, start, _ in details)
    sep_chars = sum(seps) + trailing
    n_chars = word_chars + sep_chars
    n_words = len(details)
    keystrokes = {k: sep_chars + word_cost[k] for k in ks}
    out: dict[str, Any] = {
        "keyboard": getattr(keyboard, "name", type(keyboard).__name__),
        "words": n_words, "characters": n_chars, "word_chars": word_chars, "separator_chars": sep_chars,
        "keystrokes": keystrokes, "complete": complete,
        "ksr": {k: 1 - keystrokes[k] / n_chars if n_chars else 0.0 for k in ks},
        "keystrokes_per_char": {k: keystrokes[k] / n_chars if n_chars else 0.0 for k in ks},
        "next_word_top1": nw_hits[1] / n_words if n_words else 0.0,
        "next_word_top3": nw_hits[3] / n_words if n_words else 0.0,
        "completion_recall": {n: rec_hits[n] / rec_total[n] if rec_total[n] else None for n in recall_chars},
        "completion_words": rec_total,
        "recall_k": recall_k, "queries": queries, "seconds": seconds, "segments": len(pieces),
    }
    if record:
        out.update(details=details, separators_before=seps, trailing=trailing)
    return out


# -- rnnlab against the baseline -------------------------------------------------------------------

def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a``'s figures over ``b``'s (higher is better for ``a`` except ``keystrokes_per_char``)."""
    def r(x, y):
        if x is None or y is None:
            return None
        return x / y if y else None  # no ratio to a zero (JSON has no infinity)

    return {"ksr": {k: r(a["ksr"][k], b["ksr"][k]) for k in a["ksr"]},
            "keystrokes_per_char": {k: r(a["keystrokes_per_char"][k], b["keystrokes_per_char"][k])
                                    for k in a["keystrokes_per_char"]},
            "next_word_top1": r(a["next_word_top1"], b["next_word_top1"]),
            "next_word_top3": r(a["next_word_top3"], b["next_word_top3"]),
            "completion_recall": {n: r(a["completion_recall"][n], b["completion_recall"][n])
                                  for n in a["completion_recall"]}}


def compare(keyboard: Keyboard, baseline: Keyboard, text: str, **kwargs) -> dict[str, Any]:
    """Evaluate both keyboards on the same text (one after the other, same settings):
    ``{"rnnlab": figures, "baseline": figures, "ratios": rnnlab / baseline}``."""
    a = evaluate_keyboard(keyboard, text, **kwargs)
    b = evaluate_keyboard(baseline, text, **kwargs)
    return {"rnnlab": a, "baseline": b, "ratios": ratios(a, b)}
