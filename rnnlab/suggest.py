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
mode).

Cross-request batching: the model calls of a suggestion are small (one context step, then about
four beam steps of at most ``beam_width`` rows), so under load their fixed cost dominates. The
engine queues requests to one worker thread that batches them at the level of model calls: each
call carries every request in flight at whatever stage it is (a context step, or the open beams of
its search at its own depth, stacked along the batch dimension of the state), and a request is
answered as soon as its own search ends; a request arriving meanwhile joins the next call. The
answers are those of one request at a time (``max_batch=1``), up to float rounding. A step's
bookkeeping is batched as well (one top-k for the beams of every request), and the model step
itself is the models' specialised inference step (``rnnlab.models.step.BatchStep``: transposed weights,
a lookup table for the inputs) checked against ``model.forward`` when the engine is built.
"""
from __future__ import annotations

import atexit
import math
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from .data.corpus import preprocess
from .data.vocab import Vocab
from .errors import RnnlabError, UsageError
from .models import LanguageModel, State
from .models.step import BatchStep

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
        """The suggestions as plain JSON types (what ``dataclasses.asdict`` gives, built directly: the
        server calls this once per keystroke)."""
        return {"mode": self.mode, "partial": self.partial,
                "next_chars": [{"text": c.text, "prob": c.prob} for c in self.next_chars],
                "completions": [{"word": c.word, "append": c.append, "prob": c.prob, "logprob": c.logprob}
                                for c in self.completions],
                "model_text": self.model_text, "context_tokens": self.context_tokens,
                "beam_steps": self.beam_steps}


@dataclass
class _Entry:
    state: State  # after the whole cached text, each (L, 1, H)
    logprobs: torch.Tensor  # (V,) log P(next token | cached text)


@dataclass
class _Lookahead:
    """The states one character past a client's last text, computed anyway by its completion
    search (its first beams): a block of rows, the row of each next character."""
    text: str
    rows: dict[str, int]  # next character -> row
    state: State  # each (L, n, H)
    logprobs: torch.Tensor  # (n, V)


class StateCache:
    """A bounded, thread-safe LRU: client -> LRU of (text -> _Entry), plus per client a lookahead.

    At most ``max_clients`` clients, each with at most ``per_client`` texts; the least recently
    used client (or text) is dropped first. The lookahead of a client (``lookahead``) holds the
    states of its last text followed by each character its completion search tried first, so
    that typing one of those characters needs no model step; it is replaced by the next one.
    """

    def __init__(self, max_clients: int = 256, per_client: int = 16):
        if max_clients < 1 or per_client < 1:
            raise UsageError("the suggestion cache needs at least one client and one entry per client")
        self.max_clients, self.per_client = max_clients, per_client
        self._clients: OrderedDict[str, OrderedDict[str, _Entry]] = OrderedDict()
        self._ahead: dict[str, _Lookahead] = {}
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
            ahead = self._ahead.get(client)
            if ahead is not None and len(ahead.text) >= len(best) and len(text) > len(ahead.text) \
                    and text.startswith(ahead.text) and text[len(ahead.text)] in ahead.rows:
                i = ahead.rows[text[len(ahead.text)]]
                best = text[:len(ahead.text) + 1]
                hit = _Entry(tuple(s[:, i:i + 1].clone() for s in ahead.state), ahead.logprobs[i].clone())  # (L, 1, H)
                self._put(entries, best, hit)  # kept like any other text (for a later deletion, say)
            elif hit is not None:
                entries.move_to_end(best)
            return best, hit

    def put(self, client: str, text: str, entry: _Entry) -> None:
        with self._lock:
            entries = self._clients.get(client)
            if entries is None:
                entries = self._clients[client] = OrderedDict()
                while len(self._clients) > self.max_clients:
                    self._ahead.pop(self._clients.popitem(last=False)[0], None)
            self._clients.move_to_end(client)
            self._put(entries, text, entry)

    def _put(self, entries: OrderedDict[str, _Entry], text: str, entry: _Entry) -> None:
        entries[text] = entry
        entries.move_to_end(text)
        while len(entries) > self.per_client:
            entries.popitem(last=False)

    def lookahead(self, client: str, ahead: _Lookahead) -> None:
        """Set the client's lookahead (a client not in the cache is not added)."""
        with self._lock:
            if client in self._clients:
                self._ahead[client] = ahead

    def __len__(self) -> int:
        with self._lock:
            return sum(len(e) for e in self._clients.values())

    def clear(self) -> None:
        with self._lock:
            self._clients.clear()
            self._ahead.clear()


@dataclass
class SuggestRequest:
    """One suggestion request: the text typed so far, how many answers, whose cache to use."""
    text: str
    k: int = 5
    client: str = ""


class _BeamSearch:
    """The completion search of one request, advanced one depth at a time so that the searches of
    many requests can share each model call (see ``SuggestEngine.suggest_batch``)."""

    def __init__(self, started: bool, k: int, width: int):
        self.k, self.width = k, width
        self.beams: list[tuple[str, float, bool]] = [("", 0.0, started)]  # (appended, log-prob, word started)
        self.finished: list[tuple[str, float]] = []  # (appended, log-prob), best first
        self.steps = 0  # model calls this search took part in
        self.depth = 0  # characters appended so far

    def finish(self, end_lp: list[float]) -> None:
        """Record the words that end here: each started beam followed by any boundary (``end_lp``,
        one log-prob per beam)."""
        self.finished += [(app, lp + e) for (app, lp, st), e in zip(self.beams, end_lp) if st]
        self.finished.sort(key=lambda f: -f[1])
        del self.finished[self.k:]

    def extend(self, best_lp: list[float], best_idx: list[int], V: int, toks: list[str],
               word_start: list[bool]) -> list[tuple[int, int]]:
        """Keep the best extensions: ``best_lp``/``best_idx`` are the best scores of (beam, token)
        pairs, best first, as flat indices ``beam * V + token`` (-inf where not allowed). Returns the
        (beam row, token) pairs kept, at most ``width``, possibly none."""
        floor = self.finished[-1][1] if len(self.finished) >= self.k else -math.inf
        new_beams, kept = [], []
        for lp, idx in zip(best_lp[:self.width], best_idx):
            if lp <= floor:  # log-probs only fall: this beam and the rest cannot reach the top k
                break
            row, col = divmod(idx, V)
            app, _, st = self.beams[row]
            new_beams.append((app + toks[col], lp, st or word_start[col]))
            kept.append((row, col))
        self.beams = new_beams
        return kept


class _Batcher:
    """Queues the requests of many threads for one worker thread that answers them in batches.

        request threads              worker thread (started on demand)
        submit(r1) ─┐
        submit(r2) ─┼─> queue ──> admit every pending request (up to max_batch in flight)
        submit(r3) ─┘               _Scheduler.step(): one model call for every request in flight
        submit(r4) ───> queue ──> (r4 arrived during that step: admitted before the next one)

    The worker exits after ``idle_s`` without work, so an idle engine holds no thread; ``close``
    stops it at once. Every live batcher is closed when the interpreter starts to exit (before
    it joins threads), so no worker is ever inside a torch call while the interpreter shuts down
    (which aborts the process: "terminate called without an active exception").
    """

    def __init__(self, engine: "SuggestEngine", max_batch: int, idle_s: float = 1.0):
        self.engine, self.max_batch, self.idle_s = engine, max_batch, idle_s
        self._queue: list[tuple[SuggestRequest, Future]] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        _LIVE_BATCHERS.add(self)

    def submit(self, request: SuggestRequest) -> Future:
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise RnnlabError("the suggestion engine is closed")
            self._queue.append((request, future))
            if self._thread is not None:
                self._cv.notify()
            else:
                self._thread = threading.Thread(target=self._work, name="rnnlab-suggest")
                self._thread.start()
        return future

    def close(self) -> None:
        """Stop the worker (after the step it is in) and wait for it; queued requests fail."""
        with self._cv:
            self._closed = True
            queued, self._queue = self._queue, []
            thread = self._thread
            self._cv.notify_all()
        for _, future in queued:
            future.set_exception(RnnlabError("the suggestion engine is closed"))
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _work(self) -> None:
        scheduler = _Scheduler(self.engine)
        try:
            while True:
                with self._cv:
                    if not self._queue and not scheduler.in_flight and not self._closed:
                        self._cv.wait(self.idle_s)
                    if self._closed or (not self._queue and not scheduler.in_flight):
                        self._thread = None
                        return
                    room = max(0, self.max_batch - scheduler.in_flight)
                    taken = self._queue[:room]
                    del self._queue[:room]
                for request, future in taken:
                    scheduler.admit(request, future)
                scheduler.step()
        finally:
            scheduler.fail(RnnlabError("the suggestion engine is closed"))


_LIVE_BATCHERS: "weakref.WeakSet[_Batcher]" = weakref.WeakSet()


def _close_live_batchers() -> None:
    for batcher in list(_LIVE_BATCHERS):
        batcher.close()


# run when the interpreter starts to exit, before it joins threads (as concurrent.futures does)
getattr(threading, "_register_atexit", atexit.register)(_close_live_batchers)


@dataclass
class _Job:
    """One request in flight: its answer so far, and its completion search once its context is known."""
    request: SuggestRequest
    out: Suggestions
    future: Future
    started: bool  # the text ends inside a word
    key: str = ""  # the text's cache key
    search: "_BeamSearch | None" = None


class _Scheduler:
    """Iteration-level batching of suggestion requests: each ``step`` makes one model call whose
    rows are every request's next piece of work, whatever stage it is at, and answers each request
    as soon as its own search ends (not when the whole batch does).

        rows of one model call:
        | job a: open beams, depth 3 | job b: open beams, depth 1 | job c: context step (1 row) |
              -> log-probs (N, V), state (L, N, H) -> the next step's rows
                 (job c then starts its search on its one row; a job whose search ends is answered)

    The bookkeeping of a step is batched too: one top-k over the beams of every job (padded to
    the same number of rows) picks each search's extensions, one top-k the next characters of
    every new context, so the Python left per job is building its few beams' strings.

    A request whose context needs no step (a cache hit) or several tokens (a first request, run
    alone with T > 1) joins with its one row at the next step. The answers are those of answering
    one request at a time: every job does the same work; only the batch it rides in differs.
    """

    def __init__(self, engine: "SuggestEngine"):
        self.engine = engine
        self.jobs: list[_Job] = []  # searching jobs whose beams are the rows below, in order
        self.counts: list[int] = []  # rows per job
        self.logprobs: torch.Tensor | None = None  # (N, V) log P(next token | each beam)
        self.state: State | None = None  # each (L, N, H)
        self.context: list[tuple[_Job, str, State, int]] = []  # (job, cache key, state (L, 1, H), token)
        self.ready: list[tuple[_Job, _Entry]] = []  # jobs whose context is known, search not started
        self.open: list[_Job] = []  # every admitted job not yet answered (an error answers them all)

    @property
    def in_flight(self) -> int:
        return len(self.jobs) + len(self.context) + len(self.ready)

    def admit(self, request: SuggestRequest, future: Future) -> None:
        """Prepare a request: answer it at once (word models, no context) or queue its first step."""
        e = self.engine
        try:
            if not 1 <= request.k <= MAX_K:
                raise UsageError(f"k must be between 1 and {MAX_K}, got {request.k}")
            mtext = e.model_text(request.text)
            if e.word_level:
                future.set_result(e._suggest_words(request.text, mtext, request.k, request.client))
                return
            partial_model = split_partial_word(mtext)[1]
            partial_user = split_partial_word(request.text)[1] if partial_model else ""
            key, hit, ids = e._pending(mtext, request.client)
            out = Suggestions(mode="complete" if partial_model else "next_word", partial=partial_user,
                              model_text=mtext, context_tokens=len(ids))
            job = _Job(request, out, future, bool(partial_model), key)
            self.open.append(job)
            if len(ids) == 1:  # the usual keystroke: one step, batched with the others
                state = hit.state if hit is not None else e.model.begin_state(1, e.device)
                self.context.append((job, key, state, ids[0]))
                return
            entry = e._advance(hit, ids)  # no step (a cache hit) or several tokens in one call
            if ids and entry is not None:
                e.cache.put(request.client, key, entry)
            if entry is None:
                future.set_result(out)
            else:
                self.ready.append((job, entry))
        except BaseException as exc:  # noqa: BLE001 - the caller's error, not the worker's
            future.set_exception(exc)

    def fail(self, exc: BaseException) -> None:
        """Answer every job still open with ``exc`` and start empty."""
        for job in self.open:
            if not job.future.done():
                job.future.set_exception(exc)
        self.__init__(self.engine)

    def step(self) -> None:
        """One model call for every job in flight; answers the jobs whose search ends."""
        try:
            with torch.inference_mode():
                self._step()
            self.open = [job for job in self.open if not job.future.done()]
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            self.fail(exc)  # including the jobs _step had taken out of its queues

    def _step(self) -> None:
        e = self.engine
        jobs, counts = self.jobs, self.counts
        lps = [self.logprobs] if jobs else []
        states = [self.state] if jobs else []
        if self.ready:
            ready, self.ready = self.ready, []
            self._start([job for job, _ in ready], torch.stack([entry.logprobs for _, entry in ready]))
            jobs, counts = [*jobs, *(job for job, _ in ready)], [*counts, *(1 for _ in ready)]
            lps += [entry.logprobs[None] for _, entry in ready]  # (1, V) each
            states += [entry.state for _, entry in ready]
        rows, cols, going, going_counts = [], [], [], []
        first = []  # (job, its first row in the next call, the characters of its first beams)
        if jobs:
            logprobs = torch.cat(lps) if len(lps) > 1 else lps[0]  # (N, V)
            state = tuple(torch.cat(p, dim=1) for p in zip(*states)) if len(states) > 1 else states[0]
            end_lp, best_lp, best_idx = self._score(jobs, counts, logprobs)
            V, toks, word_start = logprobs.shape[1], e.vocab.idx_to_token, e._word_start_list
            offset = 0
            for job, n, b_lp, b_idx in zip(jobs, counts, best_lp, best_idx):
                s = job.search
                s.finish(end_lp[offset:offset + n])  # a started word followed by any boundary
                kept = s.extend(b_lp, b_idx, V, toks, word_start) if s.depth < e.max_word_length else []
                if kept:
                    if s.depth == 0:
                        first.append((job, len(rows), [toks[c] for _, c in kept]))
                    rows += [offset + r for r, _ in kept]
                    cols += [c for _, c in kept]
                    s.steps += 1
                    s.depth += 1
                    going.append(job)
                    going_counts.append(len(kept))
                else:
                    self._answer(job)
                offset += n
        context, self.context = self.context, []
        if not cols and not context:
            self.jobs, self.counts, self.logprobs, self.state = [], [], None, None
            return
        if cols:
            idx = torch.tensor(rows, device=e.device)  # (n,) the rows of the beams kept
            parts = [tuple(s.index_select(1, idx) for s in state)]
        else:
            parts = []
        parts += [st for _, _, st, _ in context]
        state_in = tuple(torch.cat(p, dim=1) for p in zip(*parts)) if len(parts) > 1 else parts[0]  # each (L, N, H)
        x = torch.tensor(cols + [t for _, _, _, t in context], dtype=torch.long, device=e.device)  # (N,)
        logits, state = e._batch_step(x, state_in)  # (N, V), each (L, N, H)
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        for job, start, chars in first:  # the text plus each first character: the likely next keystrokes
            end = start + len(chars)
            e.cache.lookahead(job.request.client, _Lookahead(
                job.key, {ch: i for i, ch in enumerate(chars)}, tuple(s[:, start:end].clone() for s in state),
                logprobs[start:end].clone()))  # each (L, n, H), (n, V)
        if context:  # these rows are the jobs' new contexts
            n = len(cols)
            for j, (job, key, _, _) in enumerate(context):
                entry = _Entry(tuple(s[:, n + j:n + j + 1].clone() for s in state), logprobs[n + j].clone())  # (L, 1, H)
                e.cache.put(job.request.client, key, entry)
            self._start([job for job, _, _, _ in context], logprobs[n:])
            going += [job for job, _, _, _ in context]
            going_counts += [1] * len(context)
        self.jobs, self.counts, self.logprobs, self.state = going, going_counts, logprobs, state

    def _score(self, jobs: list[_Job], counts: list[int],
               logprobs: torch.Tensor) -> tuple[list[float], list[list[float]], list[list[int]]]:
        """For the beams of every job at once (``logprobs`` (N, V), the rows of job j after those
        of jobs < j): log P(a boundary next) per beam, and per job its best (beam, token) scores,
        best first, with their flat indices ``beam * V + token``."""
        e = self.engine
        N, V = logprobs.shape
        beams = [b for job in jobs for b in job.search.beams]
        depth_codes = [2 * (job.search.depth < 3) for job, n in zip(jobs, counts) for _ in range(n)]
        codes = torch.tensor([c + st for c, (_, _, st) in zip(depth_codes, beams)], device=e.device)  # (N,)
        base = torch.tensor([lp for _, lp, _ in beams], device=e.device, dtype=logprobs.dtype)  # (N,)
        scores = (base[:, None] + logprobs).masked_fill_(e._blocked[codes], -math.inf)  # (N, V)
        J, R = len(jobs), max(counts)
        if J * R != N:  # pad every job to R rows of -inf, so that one top-k serves them all
            dest = torch.tensor([j * R + r for j, n in enumerate(counts) for r in range(n)], device=e.device)
            scores = scores.new_full((J * R, V), -math.inf).index_copy_(0, dest, scores)  # (J*R, V)
        best = scores.view(J, R * V).topk(min(max(job.search.width for job in jobs), R * V), dim=1)  # (J, W)
        end_lp = torch.logsumexp(logprobs.index_select(1, e._boundary_ids), dim=-1)  # (N,)
        return end_lp.tolist(), best.values.tolist(), best.indices.tolist()

    def _start(self, jobs: list[_Job], logprobs: torch.Tensor) -> None:
        """The next characters of each job (``logprobs`` (J, V): row j after job j's text), and a
        completion search on its one row."""
        e = self.engine
        k_max = min(max(job.request.k for job in jobs), e.n_typable)
        top = logprobs.masked_fill(~e.typable, -math.inf).topk(k_max, dim=1)  # (J, k_max)
        toks = e.vocab.idx_to_token
        for job, lps, ids in zip(jobs, top.values.tolist(), top.indices.tolist()):
            k = job.request.k
            job.out.next_chars = [TokenProb(toks[i], math.exp(lp)) for lp, i in zip(lps[:k], ids[:k])]
            # a new word may follow different boundaries (" the", "\nthe"): search deeper, keep the best
            width = k if job.started else 2 * k
            job.search = _BeamSearch(job.started, width, max(e.beam_width, width))

    def _answer(self, job: _Job) -> None:
        out, seen = job.out, set()
        out.beam_steps = job.search.steps
        for append, lp in job.search.finished:
            word = _visible_word(out.partial, append)
            if word not in seen and len(out.completions) < job.request.k:
                seen.add(word)
                out.completions.append(Completion(word, append, math.exp(lp), lp))
        job.future.set_result(out)


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
        self.batcher = _Batcher(self, max_batch)
        self.word_level = vocab.separator != ""
        self.device = model.device
        toks = vocab.idx_to_token
        special = [vocab.unk_id] if vocab.unk_id is not None else []
        typable = torch.ones(len(toks), dtype=torch.bool)
        typable[special] = False
        self.typable = typable.to(self.device)  # (V,) tokens a user could type (not <unk>)
        self.n_typable = int(typable.sum())
        if not self.word_level:
            single = torch.tensor([len(t) == 1 for t in toks]) & typable
            word = torch.tensor([len(t) == 1 and is_word_char(t) for t in toks]) & single
            inner = torch.tensor([t in INNER_WORD_CHARS for t in toks]) & single
            self.word_start = word.to(self.device)  # (V,) may start a word
            self.word_continue = (word | inner).to(self.device)  # (V,) may continue a word
            self.boundary = (single & ~word & ~inner).to(self.device)  # (V,) ends a word
            self.leading = (single & ~word).to(self.device)  # (V,) may come before a word starts
            self._word_start_list = word.tolist()
            self._boundary_ids = self.boundary.nonzero()[:, 0]  # (number of boundary tokens,)
            self._batch_step = BatchStep(model)
            # what a beam may not append next, by row 2 * (depth < 3) + (word started): a started word
            # takes word characters; an unstarted one a word start or (up to three) leading boundaries
            self._blocked = torch.stack([~word, ~(word | inner), ~(word | (single & ~word)),
                                         ~(word | inner)]).to(self.device)  # (4, V)
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

    # -- suggestions ----------------------------------------------------------------------------

    def submit(self, text: str, k: int = 5, client: str = "") -> Future:
        """Queue a request; the future resolves to its ``Suggestions`` (see ``suggest``)."""
        if not 1 <= k <= MAX_K:
            raise UsageError(f"k must be between 1 and {MAX_K}, got {k}")
        return self.batcher.submit(SuggestRequest(text, k, client))

    def close(self) -> None:
        """Stop the batching worker thread (it also stops after a second idle, and at exit)."""
        self.batcher.close()

    def suggest(self, text: str, k: int = 5, client: str = "") -> Suggestions:
        """Next characters and word completions for ``text``; ``client`` names whose cache to use.
        Safe to call from many threads: concurrent requests are answered in batches."""
        return self.submit(text, k, client).result()

    def suggest_batch(self, requests: list[SuggestRequest]) -> list[Suggestions]:
        """Answer many requests together in the calling thread, as the worker does; the answers are
        those of asking one at a time (up to float rounding: the model sees the same inputs in a
        larger batch)."""
        scheduler = _Scheduler(self)
        futures = [Future() for _ in requests]
        for request, future in zip(requests, futures):
            scheduler.admit(request, future)
        while scheduler.in_flight:
            scheduler.step()
        return [f.result() for f in futures]

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
    """One-off suggestions for ``text`` (no cache kept between calls), computed in the calling
    thread; see ``SuggestEngine``."""
    return SuggestEngine(model, vocab, preset).suggest_batch([SuggestRequest(text, k)])[0]

