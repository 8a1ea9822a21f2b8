"""How good the predictive keyboard is, measured as a user feels it: keystrokes saved.

    simulate.py  the simulated user (protocol in its docstring), rnnlab's engine as a keyboard,
                 rnnlab against a baseline on one text (``rnnlab eval DIR --keyboard``)
    ngram.py     the baseline: a word bigram with interpolated Kneser-Ney, built from training text
    mix.py       the word-level re-ranker: the engine's candidates, the training text's lexicon and
                 bigram, and the user's recent words, scored exactly by the character model
"""
from .mix import DropTyped, LexiconFilter, MixKeyboard, WordScorer
from .ngram import BOS, BigramKeyboard, BigramModel, last_word
from .simulate import (
    DEFAULT_KS,
    AdaptiveKeyboard,
    FixedKeyboard,
    Keyboard,
    RnnlabKeyboard,
    compare,
    compare_checkpoint,
    evaluate_keyboard,
    ratios,
    split_heldout,
)

__all__ = ["AdaptiveKeyboard", "BOS", "BigramKeyboard", "BigramModel", "DEFAULT_KS", "DropTyped", "FixedKeyboard", "Keyboard",
           "LexiconFilter", "MixKeyboard", "RnnlabKeyboard", "WordScorer", "compare", "compare_checkpoint",
           "evaluate_keyboard", "last_word", "ratios", "split_heldout"]
