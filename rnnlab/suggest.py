"""Predictive-keyboard suggestions: the next characters and the completions of the current word.

``suggest(model, vocab, text, k)`` answers two questions about the text typed so far:

* **next characters** — the ``k`` most likely next tokens with their probabilities;
* **word completions** — the ``k`` most likely ways to finish the word being typed (or, when the
  text ends at a word boundary, the ``k`` most likely next words), each with the probability that
  the model writes exactly that word and then ends it.

Word boundary (character models): a *word character* is a letter or a digit (``str.isalnum``);
an apostrophe (``'`` or ``’``) also counts once a word has started, so ``don't`` is one word
while a quote mark before a word is not part of it. Every other character (space, newline,
punctuation) ends a word. The word being typed is the trailing run of word characters of the text.

Completion search is a beam search over characters, bounded in width (``beam_width``) and depth
(``max_word_length`` characters). A beam may first emit boundary characters (the space after a
comma, say), then word characters; it *finishes* when, after at least one word character, the
model emits a boundary: its score is log P(characters) + log P(any boundary next). Finished words
are distinct strings none of which is a prefix-extension of another ending, so their
probabilities are those of disjoint events and sum to at most 1. The search stops early once no
open beam can beat the k-th finished word (log-probabilities only fall as a beam grows). Words
longer than ``max_word_length`` are not suggested (so a script without spaces, such as Chinese,
gets next characters only).

Word models (``vocab.separator == " "``): the next words are the model's top tokens; a partly
typed word is completed with the vocabulary words that start with it, ranked by the model's
probability; next characters are the summed probabilities of the words by their next letter.

Incremental state: ``SuggestEngine`` keeps, per client, an LRU of (text -> recurrent state, next
token distribution). A request reuses the longest cached prefix of its text, so typing one more
character costs one model step; deleting a character hits an earlier entry. The cache is bounded in
clients and entries per client and guarded by a lock; the model itself is only read (inference
mode), so concurrent requests share no other mutable state. The engine still computes one
suggestion at a time (a lock around the model work): each is a few small model calls, and under
load sixteen threads fighting for the GIL finish them more slowly than a queue does.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch

from .data.corpus import preprocess
from .data.vocab import Vocab
from .errors import UsageError
from .models import LanguageModel, State

INNER_WORD_CHARS = frozenset("'’")  # word characters only inside a word (contractions)
MAX_K = 50


def is_word_char(ch: str) -> bool:
    return ch.isalnum()


def split_partial_word(text: str) -> tuple[str, str]:
    """``text`` -> (context, partial word): the partial word is the trailing run of word characters
    (apostrophes allowed inside it, not at its start)."""
    i = len(text)
    while i > 0 and (is_word_char(text[i - 1]) or text[i - 1] in INNER_WORD_CHARS):
        i -= 1
    while i < len(text) and text[i] in INNER_WORD_CHARS:  # a leading quote mark is not part of a word
        i += 1
    return text[:i], text[i:]


@dataclass
class TokenProb:
    text: str  # the token as typed (a character for char models, a word for word models)
    prob: float


@dataclass
class Completion:
    word: str  # the whole word as the user will see it (their typed part + the completion)
    append: str  # what to append to the text to get it (may start with boundary characters)
    prob: float  # P(the model writes ``append`` and then ends the word)
    logprob: float


@dataclass
class Suggestions:
    mode: str  # "complete" (the text ends inside a word) or "next_word" (it ends at a boundary)
    partial: str  # the word being completed, as the user typed it ("" in next_word mode)
    next_chars: list[TokenProb] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    model_text: str = ""  # the text the model saw (after the checkpoint's preprocessing)
    context_tokens: int = 0  # tokens run to bring the state of the text up to date (1 per typed char)
    beam_steps: int = 0  # model calls made by the completion search

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Entry:
    state: State  # after the whole cached text, each (L, 1, H)
    logprobs: torch.Tensor  # (V,) log P(next token | cached text)


class StateCache:
    """A bounded, thread-safe LRU: client -> LRU of (text -> _Entry).

    At most ``max_clients`` clients, each with at most ``per_client`` texts; the least recently
    used client (or text) is dropped first.
    """

    def __init__(self, max_clients: int = 256, per_client: int = 16):
        if max_clients < 1 or per_client < 1:
            raise UsageError("the suggestion cache needs at least one client and one entry per client")
        self.max_clients, self.per_client = max_clients, per_client
        self._clients: OrderedDict[str, OrderedDict[str, _Entry]] = OrderedDict()
        self._lock = threading.Lock()

    def longest_prefix(self, client: str, text: str) -> tuple[str, _Entry | None]:
        """The longest cached text that is a prefix of ``text`` (and its entry), else ("", None)."""
        with self._lock:
            entries = self._clients.get(client)
            if entries is None:
                return "", None
            self._clients.move_to_end(client)
            best, hit = "", None
            for key, entry in entries.items():
                if len(key) > len(best) and text.startswith(key):
                    best, hit = key, entry
            if hit is not None:
                entries.move_to_end(best)
            return best, hit

    def put(self, client: str, text: str, entry: _Entry) -> None:
        with self._lock:
            entries = self._clients.get(client)
            if entries is None:
                entries = self._clients[client] = OrderedDict()
                while len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            self._clients.move_to_end(client)
            entries[text] = entry
            entries.move_to_end(text)
            while len(entries) > self.per_client:
                entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(e) for e in self._clients.values())

    def clear(self) -> None:
        with self._lock:
            self._clients.clear()


class SuggestEngine:
    """Suggestions from one model, with the incremental state cache.

    ``preset`` is the checkpoint's ``data_config.preset``: with ``letters`` the text is lowercased
    and every run of non-letters becomes one space before the model sees it (as in training);
    completions are what to *append* to the user's own text, so they apply to it unchanged.
    """

    def __init__(self, model: LanguageModel, vocab: Vocab, preset: str = "raw", beam_width: int = 8,
                 max_word_length: int = 24, cache: StateCache | None = None):
        if beam_width < 1 or max_word_length < 1:
            raise UsageError("beam_width and max_word_length must be positive")
        self.model, self.vocab, self.preset = model, vocab, preset
        self.beam_width, self.max_word_length = beam_width, max_word_length
        self.cache = cache if cache is not None else StateCache()
        self._compute = threading.Lock()  # one suggestion at a time: see the module docstring
        self.word_level = vocab.separator != ""
        self.device = model.device
        toks = vocab.idx_to_token
        special = [vocab.unk_id] if vocab.unk_id is not None else []
        typable = torch.ones(len(toks), dtype=torch.bool)
        typable[special] = False
        self.typable = typable.to(self.device)  # (V,) tokens a user could type (not <unk>)
        if not self.word_level:
            single = torch.tensor([len(t) == 1 for t in toks]) & typable
            word = torch.tensor([len(t) == 1 and is_word_char(t) for t in toks]) & single
            inner = torch.tensor([t in INNER_WORD_CHARS for t in toks]) & single
            self.word_start = word.to(self.device)  # (V,) may start a word
            self.word_continue = (word | inner).to(self.device)  # (V,) may continue a word
            self.boundary = (single & ~word & ~inner).to(self.device)  # (V,) ends a word
            self.leading = (single & ~word).to(self.device)  # (V,) may come before a word starts
            start = "\n" if "\n" in vocab else (" " if " " in vocab else None)
            self.start_ids = vocab.encode([start]) if start is not None else []

    # -- text -> model tokens -------------------------------------------------------------------

    def model_text(self, text: str) -> str:
        """The text as the model was trained to see it (the ``letters`` preset keeps a trailing
        boundary, which matters: "the time " asks for a new word, "the time" completes one)."""
        if self.preset == "letters":
            out = preprocess(text, "letters")
            if out and text and not text[-1].isalpha():
                out += " "
            return out
        return text

    def _tokens(self, text: str) -> list[str]:
        return text.split() if self.word_level else list(text)

    def _key(self, mtext: str) -> str:
        """Cache key of a model text: the text itself (char models) or its words, each followed by a
        space (word models), so that a key is a prefix of another exactly when its tokens are."""
        return "".join(w + " " for w in mtext.split()) if self.word_level else mtext

    # -- the state of the text typed so far -----------------------------------------------------

    @torch.inference_mode()
    def _advance(self, entry: _Entry | None, ids: list[int]) -> _Entry | None:
        """Run ``ids`` after ``entry`` (or from the start state) in one model call."""
        if not ids:
            return entry
        state = entry.state if entry is not None else self.model.begin_state(1, self.device)
        x = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)
        logits, state = self.model(x, state)  # (1, T, V)
        return _Entry(state, torch.log_softmax(logits[0, -1].float(), dim=-1))

    def context_entry(self, context: str, client: str = "") -> tuple[_Entry | None, int]:
        """The state and next-token log-probs after the model text ``context``, and the number of
        tokens run to get them (0 on a cache hit, 1 after typing one more character).

        Char models see the text after a start token (a line break, or a space), so an empty text
        has a distribution too; word models need at least one word (else ``None``)."""
        key = self._key(context)
        hit_key, hit = self.cache.longest_prefix(client, key)
        tokens = self._tokens(key)
        done = len(self._tokens(hit_key)) if hit is not None else 0
        ids = self.vocab.encode(tokens[done:])
        if hit is None and not self.word_level:
            ids = self.start_ids + ids
        entry = self._advance(hit, ids)
        if entry is not None and entry is not hit:
            self.cache.put(client, key, entry)
        return entry, len(ids)

    # -- suggestions ----------------------------------------------------------------------------

    def suggest(self, text: str, k: int = 5, client: str = "") -> Suggestions:
        """Next characters and word completions for ``text``; ``client`` names whose cache to use."""
        if not 1 <= k <= MAX_K:
            raise UsageError(f"k must be between 1 and {MAX_K}, got {k}")
        with self._compute:
            return self._suggest(text, k, client)

    def _suggest(self, text: str, k: int, client: str) -> Suggestions:
        mtext = self.model_text(text)
        if self.word_level:
            return self._suggest_words(text, mtext, k, client)
        partial_model = split_partial_word(mtext)[1]
        partial_user = split_partial_word(text)[1] if partial_model else ""
        entry, steps = self.context_entry(mtext, client)
        out = Suggestions(mode="complete" if partial_model else "next_word", partial=partial_user,
                          model_text=mtext, context_tokens=steps)
        if entry is None:
            return out
        n = min(k, int(self.typable.sum()))
        top = torch.topk(entry.logprobs.masked_fill(~self.typable, -math.inf), n)
        out.next_chars = [TokenProb(self.vocab.idx_to_token[i], math.exp(lp))
                          for lp, i in zip(top.values.tolist(), top.indices.tolist())]
        # a new word may follow different boundaries (" the", "\nthe"): search deeper, keep the best
        found, out.beam_steps = self._beam_search(entry, bool(partial_model), k if partial_model else 2 * k)
        seen: set[str] = set()
        for append, lp in found:
            word = _visible_word(partial_user, append)
            if word not in seen and len(out.completions) < k:
                seen.add(word)
                out.completions.append(Completion(word, append, math.exp(lp), lp))
        return out

    @torch.inference_mode()
    def _beam_search(self, entry: _Entry, started: bool, k: int) -> tuple[list[tuple[str, float]], int]:
        """Top-``k`` (characters to append, log-prob) that end the current word, best first, and
        the number of model calls made."""
        toks = self.vocab.idx_to_token
        V = len(toks)
        W = max(self.beam_width, k)
        beams: list[tuple[str, float, bool]] = [("", 0.0, started)]  # (appended, log-prob, word started)
        state, logprobs = entry.state, entry.logprobs[None]  # state: each (L, 1, H); logprobs (1, V)
        unstarted_ok = self.word_start | self.leading  # (V,)
        finished: list[tuple[str, float]] = []
        steps = 0
        for depth in range(self.max_word_length + 1):
            # finish here: a started word followed by any boundary character
            end_lp = torch.logsumexp(logprobs.masked_fill(~self.boundary, -math.inf), dim=-1).tolist()  # (N,)
            finished += [(app, lp + e) for (app, lp, st), e in zip(beams, end_lp) if st]
            finished.sort(key=lambda f: -f[1])
            del finished[k:]
            if depth == self.max_word_length:
                break
            # extend: a started word takes word characters; an unstarted one a word start or (up to
            # three) leading boundary characters
            is_started = torch.tensor([b[2] for b in beams], device=self.device)[:, None]  # (N, 1)
            unstarted = unstarted_ok if depth < 3 else self.word_start
            allowed = torch.where(is_started, self.word_continue[None], unstarted[None])  # (N, V)
            base = torch.tensor([b[1] for b in beams], device=self.device)[:, None]  # (N, 1)
            flat = (base + logprobs).masked_fill(~allowed, -math.inf).flatten()  # (N*V,)
            best = torch.topk(flat, min(W, flat.numel()))
            floor = finished[-1][1] if len(finished) >= k else -math.inf
            new_beams, rows, cols = [], [], []
            for lp, idx in zip(best.values.tolist(), best.indices.tolist()):
                if lp <= floor:  # log-probs only fall: this beam and the rest cannot reach the top k
                    break
                row, col = divmod(idx, V)
                app, _, st = beams[row]
                new_beams.append((app + toks[col], lp, st or bool(self.word_start[col])))
                rows.append(row)
                cols.append(col)
            if not new_beams:
                break
            r = torch.tensor(rows, device=self.device)
            state = tuple(s[:, r] for s in state)  # each (L, N, H)
            x = torch.tensor(cols, dtype=torch.long, device=self.device)[:, None]  # (N, 1)
            logits, state = self.model(x, state)  # (N, 1, V)
            logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (N, V)
            beams = new_beams
            steps += 1
        return finished, steps

    def _suggest_words(self, text: str, mtext: str, k: int, client: str) -> Suggestions:
        """Word models: the next words, or the vocabulary words that complete the typed one."""
        ends_word = not mtext or mtext[-1].isspace()
        words = mtext.split()
        partial = "" if ends_word else words[-1]
        partial_user = text.split()[-1] if partial else ""
        context = " ".join(words if ends_word else words[:-1])
        out = Suggestions(mode="complete" if partial else "next_word", partial=partial_user, model_text=mtext)
        if not context:
            return out  # a word model needs at least one whole word of context
        entry, out.context_tokens = self.context_entry(context, client)
        probs = entry.logprobs.exp().masked_fill(~self.typable, 0.0).tolist()  # (V,)
        toks = self.vocab.idx_to_token
        cand = sorted((i for i, t in enumerate(toks) if probs[i] > 0 and t.startswith(partial)),
                      key=lambda i: -probs[i])
        out.completions = [Completion(partial_user + toks[i][len(partial):], toks[i][len(partial):],
                                      probs[i], math.log(probs[i])) for i in cand[:k]]
        # next characters: P(next letter = c) sums P(word) over the words that continue with c
        # (a space: the typed word is itself the word)
        by_char: dict[str, float] = {}
        for i in cand:
            c = toks[i][len(partial)] if len(toks[i]) > len(partial) else " "
            by_char[c] = by_char.get(c, 0.0) + probs[i]
        out.next_chars = [TokenProb(c, p) for c, p in sorted(by_char.items(), key=lambda cp: -cp[1])[:k]]
        return out


def _visible_word(partial_user: str, append: str) -> str:
    """The word a completion produces, as the user will see it: when ``append`` starts with
    boundary characters a new word begins after them; otherwise the typed part (with the user's own
    spelling and case) is followed by the appended characters."""
    i = 0
    while i < len(append) and not is_word_char(append[i]):
        i += 1
    return append[i:] if i > 0 else partial_user + append


def suggest(model: LanguageModel, vocab: Vocab, text: str, k: int = 5, preset: str = "raw") -> Suggestions:
    """One-off suggestions for ``text`` (no cache kept between calls); see ``SuggestEngine``."""
    return SuggestEngine(model, vocab, preset).suggest(text, k)
