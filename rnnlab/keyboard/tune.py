"""The word model of a character checkpoint, built from its training split, and the word search's
settings tuned on its selection slice (``rnnlab words DIR``; ``rnnlab train`` runs it at the end).

Texts (``split_points`` of the corpus as the model read it, preset applied; the test split is
never read here)::

    [0, s) selection slice        the simulated user types it (at most ``tune_words`` words, at
                                  most ``tune_seconds``), from the start of the text
    [s, b) training split         the word model (lexicon + n-gram) is built from it
    [b, n) test split             reported by ``rnnlab eval --keyboard``; never read when tuning

A run without a selection slice is tuned on the tail of its training split (its last 5%, with the
word model built from the text before it); the saved word model is then built from the whole
training split.

How: one pass of the simulation (``evaluate_keyboard`` with ``full_scan``: every position of every
word) records, at each position, every candidate the widest settings admit with its features
(``Suggestions.features``: its exact character-model log-prob, n-gram probability, recent-word
count, lexicon membership and rank in each source). Any settings then rank the candidates of every
position at once (``mix.mix_score``, the formula the server computes), which gives the keystrokes
of every word at k = 1, 3, 5 without the model. A coordinate search over the weights at a word
start and inside a word (simplex grids in steps of 0.1), the out-of-lexicon factor and the
candidate counts minimises the keystrokes
at k = 3 (then k = 1, then k = 5); counts are then cut to the smallest that cost at most 0.1% of
the characters more. The fair n-gram keyboard's settings (character weight 0, no beam) are tuned
the same way on the same positions. Everything tuned is saved in ``words.json`` and printed.
Fewer than ``MIN_WORDS`` words typed (a tiny corpus) tune nothing: the default settings are kept.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import DataConfig, SuggestConfig, WordsConfig
from ..data.corpus import load_corpus
from ..data.text_data import resolve_source, split_points
from ..errors import RnnlabError
from ..suggest import MixParams, SuggestEngine, SuggestRequest, WordModel, Words, save_words
from ..suggest.mix import NO_RANK, mix_score, selected
from ..suggest.store import text_settings
from ..suggest.text import word_spans
from .ngram import BASELINE
from .simulate import evaluate_keyboard

TAIL = 0.05  # without a selection slice: the share of the training split's end that tunes
WIDEST = MixParams(beam_k=10, lexicon_k=40, cache_k=10)  # the candidates recorded
SIMPLEX = [(a / 10, b / 10, (10 - a - b) / 10) for a in range(11) for b in range(11 - a)]
GRIDS: dict[str, list] = {
    "next_weights": SIMPLEX,  # at a word start
    "weights": SIMPLEX,  # inside a word
    "oov_factor": [1.0, 0.5, 0.25, 0.1, 0.03, 0.0],
    "beam_k": [0, 2, 5, 10],
    "lexicon_k": [5, 10, 20, 40],
    "cache_k": [0, 2, 5, 10],
}
COUNT_SLACK = 0.001  # a smaller candidate count is taken if it costs at most this share of the characters
MIN_WORDS = 100  # fewer words typed in time than this (or than --tune-words) tune nothing: the defaults stay
PREAMBLE, SEGMENTS = 2000, 48  # the typist's context, as `rnnlab eval --keyboard` types

Log = Callable[[str], None]


# -- the texts -----------------------------------------------------------------------------------

def model_text(cfg: DataConfig, log: Log = lambda m: None) -> str:
    """The corpus as a character model read it (its preset applied, ``max_tokens`` cut; a chat
    export's messages with ``cfg.chat``, whose report goes to ``log``)."""
    if cfg.prepared is not None:
        raise RnnlabError("a prepared corpus keeps ids, not text; the keyboard's word model needs the text")
    corpus = load_corpus(resolve_source(cfg), cfg.preset, "char", cfg.encoding, cfg.errors, cfg.chat, cfg.speaker)
    if corpus.chat is not None:
        log(corpus.chat.report.describe())
    tokens = corpus.tokens[:cfg.max_tokens] if cfg.max_tokens else corpus.tokens
    return "".join(tokens)


def tuning_texts(text: str, cfg: DataConfig) -> dict[str, Any]:
    """Where the word model and its tuning read (the module docstring): ``ngram`` (the word model's
    text while tuning), ``tune`` (typed, after ``history``), ``final`` (the saved word model's text,
    None when it is ``ngram``), and their ranges."""
    s, b = split_points(len(text), cfg.val_fraction, cfg.select_fraction)
    if s > 0:
        return {"ngram": text[s:b], "tune": text[:s], "history": "", "final": None, "tune_range": [0, s],
                "train_range": [s, b], "on": "the selection slice"}
    cut = b - int(b * TAIL)
    starts = [i for i, _ in word_spans(text[cut:b])]
    cut = cut + starts[0] if starts else b
    return {"ngram": text[:cut], "tune": text[cut:b], "history": text[:cut], "final": text[:b],
            "tune_range": [cut, b], "train_range": [0, b], "on": "the tail of the training split (no selection slice)"}


# -- recording the candidates --------------------------------------------------------------------

class _Recorder:
    """A keyboard that answers with the engine (the widest settings) and keeps every position's
    candidates; ``observe`` (the simulation's hook) files them under their word."""

    name = "rnnlab"

    def __init__(self, engine: SuggestEngine):
        self.engine = engine
        self.batch: list = []
        self.positions: dict[int, dict[int, tuple[str, Any]]] = {}  # word start -> typed chars -> (target, features)

    def completions_batch(self, queries, k, streams=None):
        answers = self.engine.suggest_batch([SuggestRequest(c + p, k, f"tune:{s}") for (c, p), s in zip(queries, streams)])
        self.batch = [a.features for a in answers]
        return [[c.word for c in a.completions] for a in answers]

    def completions(self, context, partial, k):
        return self.completions_batch([(context, partial)], k, [""])[0]

    def observe(self, j: int, start: int, i: int, target: str, shown: list[str]) -> None:
        self.positions.setdefault(start, {})[i] = (target, self.batch[j])


@dataclasses.dataclass
class Table:
    """Every recorded position's candidates as padded arrays (Q positions x C candidates)."""
    lp_nn: np.ndarray
    p_ng: np.ndarray
    count: np.ndarray
    in_lex: np.ndarray
    beam_rank: np.ndarray
    ng_rank: np.ndarray
    cache_rank: np.ndarray
    target: np.ndarray  # the candidate is the word being typed
    before: np.ndarray  # the candidate's spelling sorts before the target's (ties are broken by spelling)
    valid: np.ndarray
    nn_norm: np.ndarray  # (Q, 1)
    ng_mass: np.ndarray
    n_cache: np.ndarray
    started: np.ndarray  # (Q, 1) 1.0 inside a word, 0.0 at a word start
    word: np.ndarray  # (Q,) the position's word (index into lengths)
    typed: np.ndarray  # (Q,) characters typed at the position
    lengths: np.ndarray  # (W,) each word's length
    separators: int  # separator characters before the words (and after the last, if all were typed)

    @property
    def characters(self) -> int:
        return int(self.lengths.sum()) + self.separators


def record(engine: SuggestEngine, text: str, history: str, max_words: int, seconds: float) -> tuple[Table, dict]:
    """Type ``text`` (after ``history``) with the engine at the widest settings, every position
    asked; the candidates of the words typed in time, as a ``Table``."""
    engine.params, engine.collect = WIDEST, True
    rec = _Recorder(engine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one-step matrices are small: one thread is faster, and leaves the other core free
    try:
        result = evaluate_keyboard(rec, text, (1, 3, 5), history=history, segments=SEGMENTS, preamble_chars=PREAMBLE,
                                   full_scan=True, max_words=max_words or None, record=True, observe=rec.observe,
                                   deadline=time.perf_counter() + seconds)
    finally:
        torch.set_num_threads(threads)
    rows, word_of, typed, lengths = [], [], [], []
    for w_i, (word, start, _) in enumerate(result["details"]):
        lengths.append(len(word))
        for i in range(len(word)):
            target, feats = rec.positions[start][i]
            rows.append((target, feats))
            word_of.append(w_i)
            typed.append(i)
    C = max((len(f.words) for _, f in rows), default=1) or 1
    Q = len(rows)

    def pad(get, fill, dtype):
        out = np.full((Q, C), fill, dtype=dtype)
        for q, (target, f) in enumerate(rows):
            v = get(target, f)
            out[q, :len(v)] = v
        return out

    table = Table(
        lp_nn=pad(lambda t, f: f.lp_nn, -np.inf, np.float64), p_ng=pad(lambda t, f: f.p_ng, 0.0, np.float64),
        count=pad(lambda t, f: f.count, 0.0, np.float64), in_lex=pad(lambda t, f: f.in_lex, 0.0, np.float64),
        beam_rank=pad(lambda t, f: f.beam_rank, NO_RANK, np.int64), ng_rank=pad(lambda t, f: f.ng_rank, NO_RANK, np.int64),
        cache_rank=pad(lambda t, f: f.cache_rank, NO_RANK, np.int64),
        target=pad(lambda t, f: [w == t for w in f.words], False, bool),
        before=pad(lambda t, f: [w < t for w in f.words], False, bool),
        valid=pad(lambda t, f: [True] * len(f.words), False, bool),
        nn_norm=np.array([[f.nn_norm] for _, f in rows]).reshape(Q, 1),
        ng_mass=np.array([[f.ng_mass] for _, f in rows]).reshape(Q, 1),
        n_cache=np.array([[f.n_cache] for _, f in rows]).reshape(Q, 1),
        started=np.array([[float(f.started)] for _, f in rows]).reshape(Q, 1),
        word=np.array(word_of, dtype=np.int64), typed=np.array(typed, dtype=np.int64),
        lengths=np.array(lengths, dtype=np.int64), separators=int(result["separator_chars"]))
    return table, result


# -- the search ----------------------------------------------------------------------------------

def mixed_scores(table: Table, params: MixParams) -> np.ndarray:
    """(Q, C) every recorded candidate's score under ``params`` (-inf: not shown)."""
    keep = table.valid & selected(params, table.beam_rank, table.ng_rank, table.cache_rank, table.started)
    s = mix_score(params, table.lp_nn, table.p_ng, table.count, table.in_lex, table.nn_norm, table.ng_mass,
                  table.n_cache, table.started, exp=np.exp)
    return np.where(keep & (s > 0), s, -np.inf)


def target_ranks(table: Table, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q,) each position's typed word's 0-based rank among its candidates ranked by ``scores``
    (Q, C) (-inf: not shown; ties by spelling, as served), and (Q,) whether it was shown at all."""
    s = np.where(table.valid & np.isfinite(scores), scores, -np.inf)
    t = np.where(table.target, s, -np.inf).max(axis=1, initial=-np.inf)  # (Q,) the target's score
    rank = ((s > t[:, None]) | ((s == t[:, None]) & table.before & np.isfinite(s))).sum(axis=1)
    return rank, np.isfinite(t)


def keystrokes(table: Table, params: MixParams, ks=(1, 3, 5), scores: np.ndarray | None = None) -> dict[int, int]:
    """The keystrokes of every recorded word at each k under ``params`` (separators included), or
    with the candidates ranked by ``scores`` (Q, C) instead."""
    rank, present = target_ranks(table, mixed_scores(table, params) if scores is None else scores)
    out = {}
    for k in ks:
        cost = table.lengths.copy()
        hit = present & (rank < k)
        np.minimum.at(cost, table.word[hit], table.typed[hit] + 1)
        out[k] = int(cost.sum()) + table.separators
    return out


def _with(params: MixParams, name: str, value) -> MixParams:
    if name in ("weights", "next_weights"):
        prefix = "next_" if name == "next_weights" else ""
        return dataclasses.replace(params, **{prefix + n: v for n, v in zip(("char_weight", "ngram_weight",
                                                                            "cache_weight"), value)})
    return dataclasses.replace(params, **{name: value})


def search(table: Table, start: MixParams, grids: dict[str, list], rounds: int = 2) -> tuple[MixParams, dict]:
    """Coordinate search from ``start`` over ``grids`` (the module docstring): the best settings and their keystrokes."""
    def cost(p: MixParams) -> tuple[int, int, int]:
        keys = keystrokes(table, p)
        return keys[3], keys[1], keys[5]

    best, best_cost = start, cost(start)
    for _ in range(rounds):
        for name, values in grids.items():
            for v in values:
                cand = _with(best, name, v)
                if cand == best or (name in ("weights", "next_weights") and not sum(v)):
                    continue
                c = cost(cand)
                if c < best_cost:
                    best, best_cost = cand, c
    # the fewest candidates that cost at most COUNT_SLACK of the characters more
    counts = [n for n in ("beam_k", "lexicon_k", "cache_k") if n in grids]
    slack = COUNT_SLACK * table.characters
    for name in counts:
        for v in sorted(grids[name]):
            if v >= getattr(best, name):
                break
            cand = _with(best, name, v)
            if cost(cand)[0] <= best_cost[0] + slack:
                best = cand
                break
    return best, keystrokes(table, best)


def tune(table: Table) -> tuple[MixParams, MixParams, dict]:
    """The served search's settings, the fair n-gram keyboard's, and what each costs."""
    served, keys = search(table, MixParams(), GRIDS)
    no_nn = [(0.0, b / 10, 1 - b / 10) for b in range(1, 11)]  # the n-gram keyboard: no character model
    base_grids = {"next_weights": no_nn, "weights": no_nn, **{n: GRIDS[n] for n in ("oov_factor", "lexicon_k", "cache_k")}}
    baseline, base_keys = search(table, BASELINE, base_grids)
    chars = table.characters

    def ksr(keys):
        return {k: round(1 - v / chars, 4) for k, v in keys.items()}

    return served, baseline, {"ksr": ksr(keys), "default_ksr": ksr(keystrokes(table, MixParams())),
                              "baseline_ksr": ksr(base_keys)}


# -- building ------------------------------------------------------------------------------------

def build_words(model, tokenizer, data_config: DataConfig, run_dir: str | Path, settings: WordsConfig | None = None,
                log: Log = print) -> Words | None:
    """Build, tune and save the word model of a character model trained on ``data_config``'s text
    into ``run_dir`` (the module docstring); None (with a one-line notice) where there is none to build."""
    settings = settings or WordsConfig()
    settings.validate()
    if tokenizer.word_level:
        log("keyboard: a word-level model completes from its own vocabulary; no word model to build")
        return None
    t0 = time.perf_counter()
    texts = tuning_texts(model_text(data_config), data_config)
    tune_model = WordModel.from_text(texts["ngram"], settings.order)
    served, baseline, report = MixParams(), BASELINE, {}
    if settings.tune_words and word_spans(texts["tune"]):
        was = model.training
        model.eval()
        engine = SuggestEngine(model, tokenizer, SuggestConfig(), words=Words(tune_model))
        try:
            table, result = record(engine, texts["tune"], texts["history"], settings.tune_words, settings.tune_seconds)
        finally:
            engine.close()
            model.train(was)
        a, b = texts["tune_range"]
        report = {"on": texts["on"], "range": [a, b], "words": int(len(table.lengths)),
                  "positions": int(len(table.word)), "characters": table.characters, "complete": bool(result["complete"])}
        if len(table.lengths) >= min(MIN_WORDS, settings.tune_words):
            served, baseline, figures = tune(table)
            report.update(figures)
    final = tune_model if texts["final"] is None else WordModel.from_text(texts["final"], settings.order)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    words = Words(final, served, baseline, {"data": text_settings(data_config),
                                            "built_from": {"range": texts["train_range"], "words": final.tokens},
                                            "tuning": report})
    save_words(run_dir, words)
    if "ksr" in report:
        log(f"keyboard: word model of {len(final):,} words ({final.tokens:,} in the training split); tuned on "
            f"{report['words']:,} words of {report['on']} in {report['seconds']:.0f} s: {served.describe()}; "
            f"keystroke savings @3 there {report['ksr'][3]:.3f} (untuned {report['default_ksr'][3]:.3f}, "
            f"fair n-gram {report['baseline_ksr'][3]:.3f})")
    else:
        why = f"only {report['words']} words to tune on" if "words" in report else "no text to tune on"
        log(f"keyboard: word model of {len(final):,} words ({final.tokens:,} in the training split); not tuned "
            f"({why}): {served.describe()}")
    return words


def build_for_run(model, tokenizer, data_config: DataConfig, run_dir: str | Path, log: Log = print) -> None:
    """``rnnlab train``'s last step: build the word model; a failure is a notice (the run is saved)."""
    if tokenizer.word_level:
        return
    try:
        build_words(model, tokenizer, data_config, run_dir, log=log)
    except (RnnlabError, OSError) as e:
        log(f"keyboard: the word model was not built ({e}); `rnnlab words {run_dir}` builds it")


__all__ = ["GRIDS", "Table", "WIDEST", "build_for_run", "build_words", "keystrokes", "mixed_scores", "model_text",
           "record", "search", "target_ranks", "tune", "tuning_texts"]
