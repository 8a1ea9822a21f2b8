"""The recent-word cache of the keyboard: the words each client has typed lately.

The words of a request are those of its own finished text (up to the word being typed) and, for a
named client, those of texts it typed before and left (a sent message, a cleared box): when a
client's new text neither extends its last one nor is a shortening of it (a backspace), the last
text's words after their common part are kept as the client's history. Words it deleted are
never kept. Anonymous requests (no client id) see their own text only.

    request (text, client) ─► finished text ─► extends the last one? parse only the new part
                                               shortens it?       re-parse (nothing kept)
                                               another text?      the old words -> history
                          ─► history + the text's words, the last ``per_client``

Bounded: at most ``max_clients`` clients (the least recently seen is dropped) and ``per_client``
words each (history and current text alike). Thread-safe. Nothing is ever read beyond the text
the request carries: the cache never sees what the user has not typed yet.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque

from ..errors import UsageError
from .text import split_partial_word, word_spans, words_of


def _tail_words(text: str, n: int) -> list[str]:
    """The last ``n`` words of ``text`` (parsing only about its last ``16 n`` characters)."""
    i = max(0, len(text) - 16 * n)
    spans = word_spans(text[i:])
    if spans and spans[0][0] == 0 and i > 0:
        spans = spans[1:]  # the window may cut the first word
    return [text[i + s:i + e] for s, e in spans[-n:]]


class _Client:
    __slots__ = ("last", "words", "history")

    def __init__(self, per_client: int):
        self.last = ""  # the finished text of the client's last request
        self.words: deque[str] = deque(maxlen=per_client)  # the words of ``last``'s tail
        self.history: deque[str] = deque(maxlen=per_client)  # words of texts it left


class RecentWords:
    """Per client, the recent words (see the module docstring)."""

    def __init__(self, per_client: int = 500, max_clients: int = 256):
        if per_client < 1 or max_clients < 1:
            raise UsageError("the recent-word cache needs at least one client and one word per client")
        self.per_client, self.max_clients = per_client, max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._lock = threading.Lock()

    def words(self, mtext: str, client: str = "") -> list[str]:
        """The recent words for a request whose (model) text is ``mtext``, oldest first, and note
        the text as the client's last one."""
        finished = split_partial_word(mtext)[0]
        if not client:
            return _tail_words(finished, self.per_client)
        with self._lock:
            c = self._clients.pop(client, None) or _Client(self.per_client)
            self._clients[client] = c  # most recently seen last
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
            if finished.startswith(c.last):  # typed on (the usual keystroke): only the new part is read
                c.words.extend(words_of(finished[len(c.last):]))
            else:
                if not c.last.startswith(finished):  # another text: the words of the old one are history
                    common = _common_words(c.last, finished)
                    c.history.extend(words_of(c.last[common:]))
                c.words.clear()
                c.words.extend(_tail_words(finished, self.per_client))
            c.last = finished
            out = list(c.history) + list(c.words)
        return out[-self.per_client:]

    def clients(self) -> int:
        with self._lock:
            return len(self._clients)


def _common_words(old: str, new: str) -> int:
    """The length of the common start of ``old`` and ``new``, cut back to the end of a word
    boundary in ``old`` (so that a word the two share only in part counts as the old text's)."""
    n = 0
    limit = min(len(old), len(new))
    while n < limit and old[n] == new[n]:
        n += 1
    return len(split_partial_word(old[:n])[0]) if n < len(old) else n


__all__ = ["RecentWords"]
