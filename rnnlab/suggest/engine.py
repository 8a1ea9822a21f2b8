"""``SuggestEngine``: suggestions from one model, with the per-client state cache and cross-request
batching (``search.Scheduler`` driven by ``worker.run_worker``).

With a word model (``store.Words``: the training text's lexicon and n-gram, with the settings
tuned for this model) the completions are the word search's (``mix``): the character beam's
words, the n-gram's and the client's recent words, each scored exactly by the character model
and mixed. ``load_engine`` builds the engine every caller uses (``rnnlab suggest``, ``serve``,
``eval --keyboard``, the library), with the checkpoint's word model when it has one.

The text is read through the checkpoint's tokenizer (with the ``letters`` preset it is lowercased
and every run of non-letters becomes one space before the model sees it, as in training);
completions are what to *append* to the user's own text, so they apply to it unchanged.

Word models (``token == "word"``): the next words are the model's top tokens; a partly typed word
is completed with the vocabulary words that start with it, ranked by the model's probability; next
characters are the summed probabilities of the words by their next letter.
"""
from __future__ import annotations

import math
from concurrent.futures import Future

import torch

from ..config import SuggestConfig
from ..data.tokenizer import Tokenizer
from ..errors import UsageError
from ..models import LanguageModel
from .cache import Entry, StateCache
from .mix import MixParams
from .recent import RecentWords
from .search import Scheduler
from .store import Words, find_words
from .text import INNER_WORD_CHARS, is_word_char
from .types import Completion, SuggestRequest, Suggestions, TokenProb
from .worker import ThreadWorker


class SuggestEngine:
    """Next characters and word completions for texts typed by many clients.

    ``suggest`` (and ``submit``, its non-blocking form) queue the request for a worker thread that
    answers every pending request together (``max_batch`` at most): one model call brings all
    their contexts up to date, then one model call per search depth advances all their open beams.
    ``suggest_batch`` does the same in the calling thread. ``max_batch=1`` answers one at a time.
    """

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, config: SuggestConfig | None = None,
                 cache: StateCache | None = None, max_batch: int = 64, words: Words | None = None,
                 recent: RecentWords | None = None):
        self.config = config if config is not None else SuggestConfig()
        self.config.validate()
        if not isinstance(max_batch, int) or max_batch < 1:
            raise UsageError(f"max_batch must be a positive integer, got {max_batch}")
        self.model, self.tokenizer, self.vocab = model, tokenizer, tokenizer.vocab
        self.beam_width, self.max_word_length = self.config.beam_width, self.config.max_word_length
        self.cache = cache if cache is not None else StateCache()
        self.max_batch = max_batch
        self.worker = ThreadWorker(self, max_batch)
        self.word_level = tokenizer.word_level
        self.device = model.device
        # the word search: a word model (``words.params`` its tuned settings), off for word-level models
        self.words = words if words is not None and self.config.words == "on" and not self.word_level else None
        self.params: MixParams = self.words.params if self.words is not None else MixParams()
        self.recent = None
        if self.words is not None and self.config.recent_words:  # as many clients as the state cache keeps
            self.recent = recent if recent is not None else RecentWords(self.config.recent_words, self.cache.max_clients)
        self.collect = False  # attach every candidate's features to the answers (the tuning reads them)
        toks = self.vocab.idx_to_token
        typable = torch.ones(len(toks), dtype=torch.bool)
        if self.vocab.unk_id is not None:
            typable[self.vocab.unk_id] = False
        self.typable = typable.to(self.device)  # (V,) tokens a user could type (not <unk>)
        self.n_typable = int(typable.sum())
        if not self.word_level:
            single = torch.tensor([len(t) == 1 for t in toks]) & typable
            word = torch.tensor([len(t) == 1 and is_word_char(t) for t in toks]) & single
            inner = torch.tensor([t in INNER_WORD_CHARS for t in toks]) & single
            self.word_start_list = word.tolist()  # (V,) may start a word
            self.char_ids = {t: i for i, t in enumerate(toks) if len(t) == 1 and typable[i]}  # character -> token
            self.boundary_ids = (single & ~word & ~inner).nonzero()[:, 0].to(self.device)  # the tokens that end a word
            # what a beam may not append next, by row 2 * (depth < 3) + (word started): a started word
            # takes word characters; an unstarted one a word start or (up to three) leading boundaries
            self.blocked = torch.stack([~word, ~(word | inner), ~(word | (single & ~word)),
                                        ~(word | inner)]).to(self.device)  # (4, V)

    # -- the state of the text typed so far -----------------------------------------------------
    def key(self, mtext: str) -> str:
        """Cache key of a model text: the text itself (char models) or its words, each followed by a
        space (word models), so that a key is a prefix of another exactly when its tokens are."""
        return "".join(w + " " for w in mtext.split()) if self.word_level else mtext

    @torch.inference_mode()
    def advance(self, entry: Entry | None, ids: list[int]) -> Entry | None:
        """Run ``ids`` after ``entry`` (or from the initial state) in one model call."""
        if not ids:
            return entry
        state = entry.state if entry is not None else self.model.begin_state(1, self.device)
        x = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)
        logits, state = self.model(x, state)  # (1, T, V)
        return Entry(state, torch.log_softmax(logits[0, -1].float(), dim=-1))

    def pending(self, mtext: str, client: str) -> tuple[str, Entry | None, list[int]]:
        """(cache key, longest cached entry, token ids still to run) for the model text ``mtext``;
        the empty text is the tokenizer's start token (``rnnlab.data.tokenizer``)."""
        key = self.key(mtext)
        hit_key, hit = self.cache.longest_prefix(client, key)
        done = len(self.tokenizer.split(hit_key)) if hit is not None else None  # tokens the cached state has read
        return key, hit, self.tokenizer.ids(key, after=done)

    def context_entry(self, mtext: str, client: str = "") -> tuple[Entry, int]:
        """The state and next-token log-probs after the model text ``mtext``, and the number of
        tokens run to get them (0 on a cache hit, 1 after typing one more character)."""
        key, hit, ids = self.pending(mtext, client)
        entry = self.advance(hit, ids)
        if entry is not hit:
            self.cache.put(client, key, entry)
        return entry, len(ids)

    # -- suggestions ----------------------------------------------------------------------------
    def submit(self, text: str, k: int = 5, client: str = "") -> Future:
        """Queue a request; the future resolves to its ``Suggestions`` (see ``suggest``)."""
        SuggestConfig(k=k).validate()
        return self.worker.submit(SuggestRequest(text, k, client))

    def suggest(self, text: str, k: int = 5, client: str = "") -> Suggestions:
        """Next characters and word completions for ``text``; ``client`` names whose cache to use.
        Safe to call from many threads: concurrent requests are answered in batches."""
        return self.submit(text, k, client).result()

    def suggest_batch(self, requests: list[SuggestRequest]) -> list[Suggestions]:
        """Answer many requests together in the calling thread, as the worker does; the answers are
        those of asking one at a time (up to float rounding: the model sees the same inputs in a
        larger batch). Raises the first request's error, if any."""
        scheduler = Scheduler(self)
        futures = [Future() for _ in requests]
        for request, future in zip(requests, futures):
            scheduler.admit(request, future)
        while scheduler.in_flight:
            scheduler.step()
        return [f.result() for f in futures]

    def tensors(self, cache: bool = True) -> list[torch.Tensor]:
        """The tensors this engine holds itself: its token masks and (``cache``) its state cache's
        states; not the model's."""
        own = [self.typable] + ([] if self.word_level else [self.boundary_ids, self.blocked])
        return own + (self.cache.tensors() if cache else [])

    def close(self) -> None:
        """Stop the batching worker thread (it also stops after a second idle, and at exit)."""
        self.worker.close()

    def suggest_words(self, text: str, mtext: str, k: int, client: str) -> Suggestions:
        """Word models: the next words, or the vocabulary words that complete the typed one."""
        ends_word = not mtext or mtext[-1].isspace()
        words = mtext.split()
        partial = "" if ends_word else words[-1]
        partial_user = text.split()[-1] if partial else ""
        context = " ".join(words if ends_word else words[:-1])
        out = Suggestions(mode="complete" if partial else "next_word", partial=partial_user, model_text=mtext)
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


def load_engine(checkpoint, config: SuggestConfig | None = None, cache: StateCache | None = None,
                max_batch: int = 64, log=None) -> SuggestEngine:
    """The engine of a loaded ``Checkpoint`` (or a checkpoint directory) as ``rnnlab suggest``,
    ``serve`` and ``eval --keyboard`` run it: with the word model of its run directory when there
    is one (``config.words`` "off": the character beam alone). ``log`` gets a one-line notice when
    a character model has no word model."""
    from ..checkpoint import Checkpoint, load_checkpoint

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    config = config if config is not None else SuggestConfig()
    config.validate()
    return SuggestEngine(ck.model, ck.tokenizer, config, cache, max_batch, words=checkpoint_words(ck, config, log))


def checkpoint_words(ck, config: SuggestConfig, log=None) -> Words | None:
    """The word model of a loaded checkpoint's run (``store.find_words``) when the word search is
    on and the model reads characters; ``log`` gets a one-line notice when there is none."""
    if config.words != "on" or ck.tokenizer.word_level or ck.path is None:
        return None
    words = find_words(ck.path, ck.data_config)
    if words is None and log is not None:
        log(f"rnnlab: {ck.path} has no word model, so completions come from the character model alone; "
            f"`rnnlab words {ck.path}` builds it from the training text")
    return words


def words_summary(words: Words | None) -> dict | None:
    """What ``/healthz`` says about the word search."""
    if words is None:
        return None
    tuning = words.meta.get("tuning") or {}
    return {"lexicon": len(words.model), "order": words.model.order, "tuned_on": tuning.get("on"),
            "settings": words.params.to_dict()}


def suggest(model: LanguageModel, tokenizer: Tokenizer, text: str, k: int = 5) -> Suggestions:
    """One-off suggestions for ``text`` (no cache kept between calls), computed in the calling thread."""
    return SuggestEngine(model, tokenizer).suggest_batch([SuggestRequest(text, k)])[0]
