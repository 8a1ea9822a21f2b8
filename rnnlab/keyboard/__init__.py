"""How good the predictive keyboard is, measured as a user feels it: keystrokes saved. This
package only simulates and measures; the keyboard itself (the word search) is ``rnnlab.suggest``.

    simulate.py  the simulated user (protocol in its docstring), rnnlab's served engine as a keyboard
    ngram.py     the fair n-gram baseline: rnnlab's word search without the character model
    presage.py   Presage (the open-source predictive-text engine) trained on the same text
    stats.py     bootstrap confidence intervals on the ratios (resampling words)
    tune.py      the word search's settings, tuned on the selection slice; builds the word model
    run.py       ``rnnlab eval DIR --keyboard``: every keyboard on the held-out test split
"""
from .ngram import BASELINE, NgramKeyboard
from .simulate import (
    DEFAULT_KS,
    AdaptiveKeyboard,
    FixedKeyboard,
    Keyboard,
    RnnlabKeyboard,
    compare,
    evaluate_keyboard,
    ratios,
)

__all__ = ["AdaptiveKeyboard", "BASELINE", "DEFAULT_KS", "FixedKeyboard", "Keyboard", "NgramKeyboard", "RnnlabKeyboard",
           "compare", "evaluate_keyboard", "ratios"]
