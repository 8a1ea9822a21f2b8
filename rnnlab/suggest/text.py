"""Word boundaries for the keyboard (character models).

A *word character* is a letter or a digit (``str.isalnum``); an apostrophe (``'`` or ``’``) also
counts once a word has started, so ``don't`` is one word while a quote mark before a word is not
part of it. Every other character (space, newline, punctuation) ends a word. The word being typed
is the trailing run of word characters of the text.
"""
from __future__ import annotations

import re

INNER_WORD_CHARS = frozenset("'’")  # word characters only inside a word (contractions)
# a word: word characters, with an inner apostrophe between two of them (``[^\W_]`` is exactly
# ``str.isalnum``: ``\w`` is isalnum or the underscore)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


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


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every word of ``text``, by the rules above."""
    return [m.span() for m in _WORD.finditer(text)]


def words_of(text: str) -> list[str]:
    """The words of ``text``, in order (``word_spans``)."""
    return [text[s:e] for s, e in word_spans(text)]


def visible_word(partial_user: str, append: str) -> str:
    """The word a completion produces, as the user will see it: when ``append`` starts with
    boundary characters a new word begins after them; otherwise the typed part (with the user's own
    spelling and case) is followed by the appended characters."""
    i = 0
    while i < len(append) and not is_word_char(append[i]):
        i += 1
    return append[i:] if i > 0 else partial_user + append
