"""The completion search, batched across requests at the level of model calls.

A word's probability is P(its characters) x P(a word boundary after them), found by a beam search
over characters bounded in width and depth. A beam may first emit boundary characters (the space
after a comma, say), then word characters; it *finishes* when, after at least one word character,
the model emits a boundary: its score is log P(characters) + log P(any boundary next). Finished
words are distinct strings none of which is a prefix-extension of another ending, so their
probabilities are those of disjoint events and sum to at most 1. A search stops early once no open
beam can beat its k-th finished word (log-probabilities only fall as a beam grows). Words longer
than the depth bound are not suggested (so a script without spaces, such as Chinese, gets next
characters only).

The word search (an engine with a word model, ``mix``): the beam runs as above for its
``beam_k`` words, and the candidates of the word model and the recent words are scored exactly
in the same model calls: their prefixes (``wordsearch.WordJob``) are extra rows of the search, depth by
depth, never taken as beams (so the beam finds what it finds alone) and shared with a beam that
reaches the same prefix. A candidate's log-prob is that of its characters after the text, then
any boundary; the candidates are mixed (``mix.candidates``) when the last row ends.

``Scheduler`` runs many searches at once: each ``step`` is one ``model.step`` call whose rows are
every request's next piece of work (see its docstring). The answers are those of one request at a
time, up to float rounding.
"""
from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass
import torch

from ..config import SuggestConfig, check_text
from ..models import State
from .cache import Entry, Lookahead
from .mix import word_query
from .text import split_partial_word, visible_word
from .types import Completion, SuggestRequest, Suggestions, TokenProb
from .wordsearch import WordJob


class BeamSearch:
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
        if not self.k:  # the word search without beam candidates: its candidate rows only
            self.beams = []
            return []
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

@dataclass
class Job:
    """One request in flight: its answer so far, and its completion search once its context is known."""
    request: SuggestRequest
    out: Suggestions
    future: Future
    started: bool  # the text ends inside a word
    key: str = ""  # the text's cache key
    search: "BeamSearch | None" = None
    recent: list[str] | None = None  # the client's recent words (the word search)
    words: WordJob | None = None  # the word search's candidates, once its context is known


class Scheduler:
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

    def __init__(self, engine):
        """``engine``: the ``SuggestEngine`` whose model, tokenizer, cache and masks the jobs use."""
        self.engine = engine
        self._reset()

    def _reset(self) -> None:
        self.jobs: list[Job] = []  # searching jobs whose beams are the rows below, in order
        self.counts: list[int] = []  # rows per job
        self.logprobs: torch.Tensor | None = None  # (N, V) log P(next token | each beam)
        self.state: State | None = None  # each (L, N, H)
        self.context: list[tuple[Job, str, State, int]] = []  # (job, cache key, state (L, 1, H), token)
        self.ready: list[tuple[Job, Entry]] = []  # jobs whose context is known, search not started
        self.open: list[Job] = []  # every admitted job not yet answered (an error answers them all)

    @property
    def in_flight(self) -> int:
        return len(self.jobs) + len(self.context) + len(self.ready)

    def admit(self, request: SuggestRequest, future: Future) -> None:
        """Prepare a request: answer it at once (word models, no context) or queue its first step."""
        e = self.engine
        try:
            SuggestConfig(k=request.k).validate()
            check_text(request.text)
            mtext = e.tokenizer.model_text(request.text)
            if e.word_level:
                future.set_result(e.suggest_words(request.text, mtext, request.k, request.client))
                return
            partial_model = split_partial_word(mtext)[1]
            partial_user = split_partial_word(request.text)[1] if partial_model else ""
            key, hit, ids = e.pending(mtext, request.client)
            out = Suggestions(mode="complete" if partial_model else "next_word", partial=partial_user,
                              model_text=mtext, context_tokens=len(ids))
            job = Job(request, out, future, bool(partial_model), key)
            if e.words is not None:
                job.recent = e.recent.words(mtext, request.client) if e.recent is not None else []
            self.open.append(job)
            if len(ids) == 1:  # the usual keystroke: one step, batched with the others
                state = hit.state if hit is not None else e.model.begin_state(1, e.device)
                self.context.append((job, key, state, ids[0]))
                return
            entry = e.advance(hit, ids)  # no step (a cache hit) or several tokens in one call
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
        self._reset()

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
            self.start([job for job, _ in ready], torch.stack([entry.logprobs for _, entry in ready]))
            jobs, counts = [*jobs, *(job for job, _ in ready)], [*counts, *(1 for _ in ready)]
            lps += [entry.logprobs[None] for _, entry in ready]  # (1, V) each
            states += [entry.state for _, entry in ready]
        rows, cols, going, going_counts = [], [], [], []
        first = []  # (job, its first row in the next call, the characters of its first beams)
        if jobs:
            logprobs = torch.cat(lps) if len(lps) > 1 else lps[0]  # (N, V)
            state = tuple(torch.cat(p, dim=1) for p in zip(*states)) if len(states) > 1 else states[0]
            end_lp, best_lp, best_idx = self.score(jobs, counts, logprobs)
            V, toks, word_start = logprobs.shape[1], e.vocab.idx_to_token, e.word_start_list
            offset = 0
            todo = []  # (job, kept beams, candidate rows) of every job that goes on
            for job, n, b_lp, b_idx in zip(jobs, counts, best_lp, best_idx):
                s, w = job.search, job.words
                nb = len(s.beams)
                here = w.rows(s.beams) if w is not None else None
                s.finish(end_lp[offset:offset + nb])  # a started word followed by any boundary
                if w is not None:
                    w.record(here, end_lp[offset:offset + n], s.depth)
                if nb and s.depth < e.max_word_length:
                    kept = s.extend(b_lp, b_idx, V, toks, word_start)
                else:
                    kept, s.beams = [], []
                extra = [(offset + r, c, prefix, lp) for r, c, prefix, lp in w.expand(here, kept)] if w is not None else []
                todo.append((job, [(offset + r, c) for r, c in kept], extra))
                offset += n
            # the candidate rows' characters, read off this step's log-probs in one gather
            flat = [x for _, _, extra in todo for x in extra]
            picked = logprobs[torch.tensor([r for r, _, _, _ in flat], device=e.device),
                              torch.tensor([c for _, c, _, _ in flat], device=e.device)].tolist() if flat else []
            i = 0
            for t, (job, kept, extra) in enumerate(todo):
                w = job.words
                if w is not None:  # the rows that can still reach the top k
                    n_extra = len(extra)
                    step = w.keep(extra, picked[i:i + n_extra], job.search.finished)
                    todo[t] = (job, kept, [extra[j] for j in step])
                    i += n_extra
            for job, kept, extra in todo:
                s = job.search
                if not kept and not extra:
                    self.answer(job)
                    continue
                if s.depth == 0:
                    first.append((job, len(rows), [toks[c] for _, c in kept] + [toks[c] for _, c, _, _ in extra]))
                rows += [r for r, _ in kept] + [r for r, _, _, _ in extra]
                cols += [c for _, c in kept] + [c for _, c, _, _ in extra]
                s.steps += 1
                s.depth += 1
                going.append(job)
                going_counts.append(len(kept) + len(extra))
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
        logits, state = e.model.step(x, state_in)  # (N, V), each (L, N, H)
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        for job, start, chars in first:  # the text plus each first character: the likely next keystrokes
            if not job.key:  # the empty text reads the start token: its states are no other text's prefix
                continue
            end = start + len(chars)
            e.cache.lookahead(job.request.client, Lookahead(
                job.key, {ch: i for i, ch in enumerate(chars)}, tuple(s[:, start:end].clone() for s in state),
                logprobs[start:end].clone()))  # each (L, n, H), (n, V)
        if context:  # these rows are the jobs' new contexts
            n = len(cols)
            for j, (job, key, _, _) in enumerate(context):
                entry = Entry(tuple(s[:, n + j:n + j + 1].clone() for s in state), logprobs[n + j].clone())  # (L, 1, H)
                e.cache.put(job.request.client, key, entry)
            self.start([job for job, _, _, _ in context], logprobs[n:])
            going += [job for job, _, _, _ in context]
            going_counts += [1] * len(context)
        self.jobs, self.counts, self.logprobs, self.state = going, going_counts, logprobs, state

    def score(self, jobs: list[Job], counts: list[int],
               logprobs: torch.Tensor) -> tuple[list[float], list[list[float]], list[list[int]]]:
        """For the beams of every job at once (``logprobs`` (N, V), the rows of job j after those
        of jobs < j): log P(a boundary next) per beam, and per job its best (beam, token) scores,
        best first, with their flat indices ``beam * V + token``."""
        e = self.engine
        N, V = logprobs.shape
        codes, base = [], []  # per row: its blocked-token mask, its log-prob (-inf: a candidate row, never a beam)
        for job in jobs:
            s = job.search
            d = 2 * (s.depth < 3)
            n_forced = len(job.words.forced) if job.words is not None else 0
            codes += [d + st for _, _, st in s.beams] + [0] * n_forced
            base += [lp for _, lp, _ in s.beams] + [-math.inf] * n_forced
        codes = torch.tensor(codes, device=e.device)  # (N,)
        base = torch.tensor(base, device=e.device, dtype=logprobs.dtype)  # (N,)
        scores = (base[:, None] + logprobs).masked_fill_(e.blocked[codes], -math.inf)  # (N, V)
        J, R = len(jobs), max(counts)
        if J * R != N:  # pad every job to R rows of -inf, so that one top-k serves them all
            dest = torch.tensor([j * R + r for j, n in enumerate(counts) for r in range(n)], device=e.device)
            scores = scores.new_full((J * R, V), -math.inf).index_copy_(0, dest, scores)  # (J*R, V)
        best = scores.view(J, R * V).topk(min(max(job.search.width for job in jobs), R * V), dim=1)  # (J, W)
        end_lp = torch.logsumexp(logprobs.index_select(1, e.boundary_ids), dim=-1)  # (N,)
        return end_lp.tolist(), best.values.tolist(), best.indices.tolist()

    def start(self, jobs: list[Job], logprobs: torch.Tensor) -> None:
        """The next characters of each job (``logprobs`` (J, V): row j after job j's text), and a
        completion search on its one row."""
        e = self.engine
        k_max = min(max(job.request.k for job in jobs), e.n_typable)
        top = logprobs.masked_fill(~e.typable, -math.inf).topk(k_max, dim=1)  # (J, k_max)
        toks = e.vocab.idx_to_token
        for job, lps, ids in zip(jobs, top.values.tolist(), top.indices.tolist()):
            k = job.request.k
            job.out.next_chars = [TokenProb(toks[i], math.exp(lp)) for lp, i in zip(lps[:k], ids[:k])]
            if e.words is not None:  # the word search: the beam's own candidates, and the others' rows
                k = e.params.beam_k if e.params.weights(job.started)[0] > 0 else 0  # no character model: no beam
                mtext = job.out.model_text
                partial = split_partial_word(mtext)[1] if job.started else ""
                query = word_query(e.words.model, mtext[:len(mtext) - len(partial)], partial, job.recent or [], e.params)
                job.words = WordJob(e, query, job.started, job.request.k)
            # a new word may follow different boundaries (" the", "\nthe"): search deeper, keep the best
            width = k if job.started else 2 * k
            beams = max(e.beam_width, width)
            if job.words is not None:  # the beam only proposes candidates there: at most twice as many beams
                beams = min(beams, 2 * width)
            job.search = BeamSearch(job.started, width, beams)

    def answer(self, job: Job) -> None:
        out, seen = job.out, set()
        out.beam_steps = job.search.steps
        if job.words is not None:
            return self.answer_words(job)
        for append, lp in job.search.finished:
            word = visible_word(out.partial, append)
            if word not in seen and len(out.completions) < job.request.k:
                seen.add(word)
                out.completions.append(Completion(word, append, math.exp(lp), lp))
        job.future.set_result(out)

    def answer_words(self, job: Job) -> None:
        """The word search's answer: every candidate with its exact log-prob, mixed (``mix``)."""
        e, out = self.engine, job.out
        cands = job.words.candidates(job.search.finished)
        if e.collect:
            out.features = cands
        for word, app, score in cands.rank(e.params, job.request.k):
            out.completions.append(Completion(visible_word(out.partial, app), app, score, math.log(score)))
        job.future.set_result(out)
