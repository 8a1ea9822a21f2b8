"""Predictive-keyboard suggestions: the next characters and the completions of the current word.

    text.py     word boundaries (what a word character is, the word being typed)
    types.py    requests and answers (SuggestRequest, Suggestions, Completion, TokenProb)
    cache.py    per-client state cache: one more typed character is one model step
    search.py   the completion beam search, batched across requests (Scheduler)
    worker.py   the batching loop shared by the worker thread and the server's suggestion process
    words.py    the word model: the training text's lexicon and a Kneser-Ney n-gram over its words
    recent.py   per-client cache of the words each client typed lately
    mix.py      the word search's candidates and their mixing (its tuned settings: MixParams)
    store.py    the word model's files beside a checkpoint (words.json + words.safetensors)
    engine.py   SuggestEngine (load_engine: as every caller runs it): all of the above for one model
    adapt.py    AdaptiveSuggester: each client's own copy of the model learns what it types

``suggest(model, tokenizer, text, k)`` answers two questions about the text typed so far: the
``k`` most likely next tokens, and the ``k`` most likely ways to finish the word being typed (or,
at a word boundary, the next words), each with the probability that the model writes exactly
that word and then ends it.
"""
from .adapt import AdaptiveSuggester
from .cache import StateCache
from .engine import SuggestEngine, checkpoint_words, load_engine, suggest, words_summary
from .mix import MixParams
from .recent import RecentWords
from .store import Words, find_words, load_words, save_words
from .search import Scheduler
from .text import INNER_WORD_CHARS, is_word_char, split_partial_word, visible_word, word_spans, words_of
from .types import Completion, SuggestRequest, Suggestions, TokenProb
from .words import WordModel
from .worker import ThreadWorker, run_worker

__all__ = ["AdaptiveSuggester", "Completion", "INNER_WORD_CHARS", "MixParams", "RecentWords", "Scheduler", "StateCache",
           "SuggestEngine", "SuggestRequest", "Suggestions", "ThreadWorker", "TokenProb", "WordModel", "Words",
           "checkpoint_words", "find_words", "is_word_char", "load_engine", "load_words", "run_worker", "save_words",
           "split_partial_word", "suggest", "visible_word", "word_spans", "words_of", "words_summary"]
