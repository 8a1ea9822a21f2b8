"""The fair n-gram baseline of the predictive keyboard: rnnlab's word search without the character
model.

It has everything the served search has except the neural network: the same word model (the
training split's lexicon and Kneser-Ney trigram, ``rnnlab.suggest.words``), the same recent-word
cache per typist (``rnnlab.suggest.recent``), the same mixing and the same rule that the typed
part itself is never shown (``rnnlab.suggest.mix``: here with the character model's weight 0 and
no beam candidates), with its own weights tuned on the same development text as rnnlab's
(``Words.baseline``, ``rnnlab.keyboard.tune``). A lead of rnnlab's over it is the character
model's, not a trick the baseline lacks.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..suggest import MixParams, RecentWords, WordModel, Words
from ..suggest.mix import candidates, word_query

BASELINE = MixParams(char_weight=0.0, ngram_weight=0.8, cache_weight=0.2, next_char_weight=0.0, next_ngram_weight=0.8,
                     next_cache_weight=0.2, beam_k=0, lexicon_k=20, cache_k=5)  # its settings until tuned


class NgramKeyboard:
    """The keyboard of ``rnnlab.keyboard``'s protocol on a word model and a recent-word cache."""

    name = "ngram"

    def __init__(self, words: Words | WordModel, params: MixParams | None = None, recent_words: int = 500):
        if isinstance(words, WordModel):
            words = Words(words, baseline=params or BASELINE)
        self.model = words.model
        self.params = params if params is not None else words.baseline
        self.params.validate()
        self.recent = RecentWords(recent_words) if recent_words else None

    @classmethod
    def from_text(cls, text: str, params: MixParams | None = None, order: int = 3, recent_words: int = 500) -> NgramKeyboard:
        return cls(WordModel.from_text(text, order), params or BASELINE, recent_words)

    def scored(self, context: str, partial: str, k: int, stream: str | None = None) -> list[tuple[str, float]]:
        """The best ``k`` words with their mixed scores (``completions`` with the scores)."""
        client = f"kb:{stream}" if stream is not None else ""  # no stream: an anonymous request (its own text only)
        recent = self.recent.words(context + partial, client) if self.recent is not None else []
        q = word_query(self.model, context, partial, recent, self.params)
        cands = candidates(self.model, q, [], {}, -math.inf)
        return [(w, s) for w, _, s in cands.rank(self.params, k)]

    def completions(self, context: str, partial: str, k: int) -> list[str]:
        return [w for w, _ in self.scored(context, partial, k)]

    def completions_batch(self, queries: Sequence[tuple[str, str]], k: int,
                          streams: Sequence[str] | None = None) -> list[list[str]]:
        streams = streams if streams is not None else [None] * len(queries)
        return [[w for w, _ in self.scored(c, p, k, s)] for (c, p), s in zip(queries, streams)]


__all__ = ["BASELINE", "NgramKeyboard"]
