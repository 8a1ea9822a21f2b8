"""Predictive-keyboard suggestions: the next characters and the completions of the current word.

    text.py     word boundaries (what a word character is, the word being typed)
    types.py    requests and answers (SuggestRequest, Suggestions, Completion, TokenProb)
    cache.py    per-client state cache: one more typed character is one model step
    search.py   the completion beam search, batched across requests (Scheduler)
    worker.py   the batching loop shared by the worker thread and the server's suggestion process
    engine.py   SuggestEngine: all of the above for one model
    adapt.py    AdaptiveSuggester: each client's own copy of the model learns what it types

``suggest(model, tokenizer, text, k)`` answers two questions about the text typed so far: the
``k`` most likely next tokens, and the ``k`` most likely ways to finish the word being typed (or,
at a word boundary, the next words), each with the probability that the model writes exactly
that word and then ends it.
"""
from .adapt import AdaptiveSuggester
from .cache import StateCache
from .engine import SuggestEngine, suggest
from .search import Scheduler
from .text import INNER_WORD_CHARS, is_word_char, split_partial_word, visible_word, word_spans, words_of
from .types import Completion, SuggestRequest, Suggestions, TokenProb
from .worker import ThreadWorker, run_worker

__all__ = ["AdaptiveSuggester", "Completion", "INNER_WORD_CHARS", "Scheduler", "StateCache", "SuggestEngine", "SuggestRequest",
           "Suggestions", "ThreadWorker", "TokenProb", "is_word_char", "run_worker", "split_partial_word", "suggest",
           "visible_word", "word_spans", "words_of"]
