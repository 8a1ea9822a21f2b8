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
from concurrent.futures import Future
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


@dataclass
class SuggestRequest:
    """One suggestion request: the text typed so far, how many answers, whose cache to use."""
    text: str
    k: int = 5
    client: str = ""


class _Batcher:
    """Collects the requests of many threads and runs them in batches on one worker thread.

        request threads                      worker thread (started on demand)
        submit(r1) ─┐
        submit(r2) ─┼─> queue ──> take every pending request (at most max_batch)
        submit(r3) ─┘                 run_batch([r1, r2, r3]) ─> set each request's future
        submit(r4) ───> queue         (r4 arrived while the batch ran: it joins the next one)

    The worker exits after ``idle_s`` without work, so an idle engine holds no thread.
    """

    def __init__(self, run_batch, max_batch: int, idle_s: float = 1.0):
        self.run_batch, self.max_batch, self.idle_s = run_batch, max_batch, idle_s
        self._queue: list[tuple[SuggestRequest, Future]] = []
        self._cv = threading.Condition()
        self._working = False

    def submit(self, request: SuggestRequest) -> Future:
        future: Future = Future()
        with self._cv:
            self._queue.append((request, future))
            if self._working:
                self._cv.notify()
            else:
                self._working = True
                threading.Thread(target=self._work, name="rnnlab-suggest", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._cv:
                if not self._queue:
                    self._cv.wait(self.idle_s)
                    if not self._queue:
                        self._working = False
                        return
                batch = self._queue[:self.max_batch]
                del self._queue[:self.max_batch]
            try:
                results = self.run_batch([r for r, _ in batch])
            except BaseException as e:  # noqa: BLE001 - handed to every waiting caller
                for _, future in batch:
                    future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)


class _BeamSearch:
    """The completion search of one request, advanced one depth at a time so that the searches of
    many requests can share each model call (see ``SuggestEngine.suggest_batch``)."""

    def __init__(self, started: bool, k: int, width: int):
        self.k, self.width = k, width
        self.beams: list[tuple[str, float, bool]] = [("", 0.0, started)]  # (appended, log-prob, word started)
        self.finished: list[tuple[str, float]] = []  # (appended, log-prob), best first
        self.steps = 0  # model calls this search took part in
        self.done = False

    def finish(self, end_lp: list[float]) -> None:
        """Record the words that end here: each started beam followed by any boundary (``end_lp``,
        one log-prob per beam)."""
        self.finished += [(app, lp + e) for (app, lp, st), e in zip(self.beams, end_lp) if st]
        self.finished.sort(key=lambda f: -f[1])
        del self.finished[self.k:]

    def extend(self, scores: torch.Tensor, toks: list[str], word_start: list[bool]) -> list[tuple[int, int]]:
        """Keep the best extensions: ``scores`` (N, V) are the log-probs of each beam followed by each
        token (-inf where not allowed). Returns the (beam row, token) pairs kept, possibly none."""
        V = scores.shape[1]
        flat = scores.flatten()  # (N*V,)
        best = torch.topk(flat, min(self.width, flat.numel()))
        floor = self.finished[-1][1] if len(self.finished) >= self.k else -math.inf
        new_beams, kept = [], []
        for lp, idx in zip(best.values.tolist(), best.indices.tolist()):
            if lp <= floor:  # log-probs only fall: this beam and the rest cannot reach the top k
                break
            row, col = divmod(idx, V)
            app, _, st = self.beams[row]
            new_beams.append((app + toks[col], lp, st or word_start[col]))
            kept.append((row, col))
        self.beams = new_beams
        return kept


class SuggestEngine:
    """Suggestions from one model, with the incremental state cache and cross-request batching.

    ``preset`` is the checkpoint's ``data_config.preset``: with ``letters`` the text is lowercased
    and every run of non-letters becomes one space before the model sees it (as in training);
    completions are what to *append* to the user's own text, so they apply to it unchanged.

    ``suggest`` (and ``submit``, its non-blocking form) queue the request; one worker thread takes
    every pending request (up to ``max_batch``) and answers them together with ``suggest_batch``:
    one model call brings all their contexts up to date, then one model call per search depth
    advances all their open beams. ``max_batch=1`` answers one request at a time.
    """

    def __init__(self, model: LanguageModel, vocab: Vocab, preset: str = "raw", beam_width: int = 8,
                 max_word_length: int = 24, cache: StateCache | None = None, max_batch: int = 64):
        if beam_width < 1 or max_word_length < 1:
            raise UsageError("beam_width and max_word_length must be positive")
        if max_batch < 1:
            raise UsageError(f"max_batch must be a positive integer, got {max_batch}")
        self.model, self.vocab, self.preset = model, vocab, preset
        self.beam_width, self.max_word_length = beam_width, max_word_length
        self.cache = cache if cache is not None else StateCache()
        self.batcher = _Batcher(self.suggest_batch, max_batch)
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
            self._word_start_list = word.tolist()
            # what a beam may not append next, by depth < 3 (rows: word not started, word started): a
            # started word takes word characters; an unstarted one a word start or (up to three)
            # leading boundary characters
            self._blocked = {True: torch.stack([~(word | (single & ~word)), ~(word | inner)]).to(self.device),
                             False: torch.stack([~word, ~(word | inner)]).to(self.device)}  # each (2, V)
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

    def _pending(self, context: str, client: str) -> tuple[str, _Entry | None, list[int]]:
        """(cache key, longest cached entry, token ids still to run) for the model text ``context``.

        Char models see the text after a start token (a line break, or a space), so an empty text
        has a distribution too; word models need at least one word (else no entry and no ids)."""
        key = self._key(context)
        hit_key, hit = self.cache.longest_prefix(client, key)
        tokens = self._tokens(key)
        done = len(self._tokens(hit_key)) if hit is not None else 0
        ids = self.vocab.encode(tokens[done:])
        if hit is None and not self.word_level:
            ids = self.start_ids + ids
        return key, hit, ids

    def context_entry(self, context: str, client: str = "") -> tuple[_Entry | None, int]:
        """The state and next-token log-probs after the model text ``context``, and the number of
        tokens run to get them (0 on a cache hit, 1 after typing one more character)."""
        key, hit, ids = self._pending(context, client)
        entry = self._advance(hit, ids)
        if entry is not None and entry is not hit:
            self.cache.put(client, key, entry)
        return entry, len(ids)

    @torch.inference_mode()
    def _context_entries(self, pending: list[tuple[str, _Entry | None, list[int]]],
                         client: list[str]) -> list[_Entry | None]:
        """``context_entry`` for many texts: every text one token behind its cached state (the usual
        keystroke) advances in one model call, batched; a longer run goes alone."""
        out: list[_Entry | None] = [hit for _, hit, _ in pending]
        single = [i for i, (_, _, ids) in enumerate(pending) if len(ids) == 1]
        if single:
            starts = [pending[i][1].state if pending[i][1] is not None else self.model.begin_state(1, self.device)
                      for i in single]
            state = tuple(torch.cat(parts, dim=1) for parts in zip(*starts))  # each (L, R, H)
            x = torch.tensor([pending[i][2] for i in single], dtype=torch.long, device=self.device)  # (R, 1)
            logits, state = self.model(x, state)  # (R, 1, V)
            logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (R, V)
            for r, i in enumerate(single):
                out[i] = _Entry(tuple(s[:, r:r + 1].clone() for s in state), logprobs[r].clone())  # (L, 1, H)
        for i, (_, hit, ids) in enumerate(pending):
            if len(ids) > 1:
                out[i] = self._advance(hit, ids)
        for i, (key, hit, ids) in enumerate(pending):
            if ids and out[i] is not None:
                self.cache.put(client[i], key, out[i])
        return out

    # -- suggestions ----------------------------------------------------------------------------

    def submit(self, text: str, k: int = 5, client: str = "") -> Future:
        """Queue a request; the future resolves to its ``Suggestions`` (see ``suggest``)."""
        if not 1 <= k <= MAX_K:
            raise UsageError(f"k must be between 1 and {MAX_K}, got {k}")
        return self.batcher.submit(SuggestRequest(text, k, client))

    def suggest(self, text: str, k: int = 5, client: str = "") -> Suggestions:
        """Next characters and word completions for ``text``; ``client`` names whose cache to use.
        Safe to call from many threads: concurrent requests are answered in batches."""
        return self.submit(text, k, client).result()

    def suggest_batch(self, requests: list[SuggestRequest]) -> list[Suggestions]:
        """Answer many requests together, in the calling thread; the answers are those of asking one
        at a time (up to float rounding: the model sees the same inputs in a larger batch)."""
        for r in requests:
            if not 1 <= r.k <= MAX_K:
                raise UsageError(f"k must be between 1 and {MAX_K}, got {r.k}")
        if self.word_level:
            return [self._suggest_words(r.text, self.model_text(r.text), r.k, r.client) for r in requests]
        return self._suggest_chars(requests)

    def _suggest_chars(self, requests: list[SuggestRequest]) -> list[Suggestions]:
        outs, partials = [], []
        pending = []
        for r in requests:
            mtext = self.model_text(r.text)
            partial_model = split_partial_word(mtext)[1]
            partial_user = split_partial_word(r.text)[1] if partial_model else ""
            pending.append(self._pending(mtext, r.client))
            outs.append(Suggestions(mode="complete" if partial_model else "next_word", partial=partial_user,
                                    model_text=mtext, context_tokens=len(pending[-1][2])))
            partials.append(bool(partial_model))
        entries = self._context_entries(pending, [r.client for r in requests])
        live = [i for i, e in enumerate(entries) if e is not None]
        if not live:
            return outs
        logprobs = torch.stack([entries[i].logprobs for i in live])  # (R, V)
        n = min(max(requests[i].k for i in live), int(self.typable.sum()))
        top = torch.topk(logprobs.masked_fill(~self.typable, -math.inf), n)  # (R, n)
        for row, (values, indices) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            i = live[row]
            kk = min(requests[i].k, n)
            outs[i].next_chars = [TokenProb(self.vocab.idx_to_token[t], math.exp(lp))
                                  for lp, t in zip(values[:kk], indices[:kk])]
        # a new word may follow different boundaries (" the", "\nthe"): search deeper, keep the best
        searches = []
        for i in live:
            k = requests[i].k if partials[i] else 2 * requests[i].k
            searches.append(_BeamSearch(partials[i], k, max(self.beam_width, k)))
        self._beam_search([entries[i] for i in live], searches)
        for i, search in zip(live, searches):
            out, seen = outs[i], set()
            out.beam_steps = search.steps
            for append, lp in search.finished:
                word = _visible_word(out.partial, append)
                if word not in seen and len(out.completions) < requests[i].k:
                    seen.add(word)
                    out.completions.append(Completion(word, append, math.exp(lp), lp))
        return outs

    @torch.inference_mode()
    def _beam_search(self, entries: list[_Entry], searches: list[_BeamSearch]) -> None:
        """Run the completion searches of many requests in lockstep: at each depth the open beams of
        every unfinished search form one batch of rows for one model call.

            rows:  | search 0: beams 0..N0-1 | search 1: beams 0..N1-1 | ...   -> model (sum N, 1)
        """
        toks = self.vocab.idx_to_token
        state = tuple(torch.cat(parts, dim=1) for parts in zip(*(e.state for e in entries)))  # each (L, R, H)
        logprobs = torch.stack([e.logprobs for e in entries])  # (R, V): one row per search's one beam
        active = list(searches)  # the searches whose beams are the rows of ``logprobs``, in order
        for depth in range(self.max_word_length + 1):
            # finish here: a started word followed by any boundary character
            end_lp = torch.logsumexp(logprobs.masked_fill(~self.boundary, -math.inf), dim=-1).tolist()  # (N,)
            offset = 0
            for s in active:
                s.finish(end_lp[offset:offset + len(s.beams)])
                offset += len(s.beams)
            if depth == self.max_word_length:
                break
            # extend each search with its best allowed characters
            started = torch.tensor([int(st) for s in active for _, _, st in s.beams], device=self.device)  # (N,)
            blocked = self._blocked[depth < 3][started]  # (N, V)
            base = torch.tensor([lp for s in active for _, lp, _ in s.beams], device=self.device)  # (N,)
            scores = (base[:, None] + logprobs).masked_fill(blocked, -math.inf)  # (N, V)
            rows, cols, still = [], [], []
            offset = 0
            for s in active:
                n = len(s.beams)
                kept = s.extend(scores[offset:offset + n], toks, self._word_start_list)
                if kept:
                    rows += [offset + r for r, _ in kept]
                    cols += [c for _, c in kept]
                    s.steps += 1
                    still.append(s)
                else:
                    s.done = True
                offset += n
            if not still:
                break
            active = still
            r = torch.tensor(rows, device=self.device)
            state = tuple(s.index_select(1, r) for s in state)  # each (L, N, H)
            x = torch.tensor(cols, dtype=torch.long, device=self.device)[:, None]  # (N, 1)
            logits, state = self.model(x, state)  # (N, 1, V)
            logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (N, V)

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
