"""The per-client state cache of the keyboard: typing one more character costs one model step.

Per client an LRU of (text -> recurrent state after it, next-token log-probabilities), plus a
*lookahead*: the states one character past the client's last text, which its completion search
computed anyway. A request reuses the longest cached prefix of its text; a backspace hits an
earlier entry. Bounded in clients and entries per client, and thread-safe.

The empty text is read from the start token (``rnnlab.data.tokenizer``) while a non-empty one is
read from the initial state, so the empty text's entry is never a prefix of another text's.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..errors import UsageError
from ..models import State


@dataclass
class Entry:
    state: State  # after the whole cached text, each (L, 1, H)
    logprobs: torch.Tensor  # (V,) log P(next token | cached text)


@dataclass
class Lookahead:
    """The states one character past a client's last text, computed anyway by its completion
    search (its first beams): a block of rows, the row of each next character."""
    text: str
    rows: dict[str, int]  # next character -> row
    state: State  # each (L, n, H)
    logprobs: torch.Tensor  # (n, V)


class StateCache:
    """A bounded, thread-safe LRU: client -> LRU of (text -> Entry), plus per client a lookahead.

    At most ``max_clients`` clients, each with at most ``per_client`` texts; the least recently
    used client (or text) is dropped first. The lookahead of a client (``lookahead``) holds the
    states of its last text followed by each character its completion search tried first, so
    that typing one of those characters needs no model step; it is replaced by the next one.
    """

    def __init__(self, max_clients: int = 256, per_client: int = 16):
        if max_clients < 1 or per_client < 1:
            raise UsageError("the suggestion cache needs at least one client and one entry per client")
        self.max_clients, self.per_client = max_clients, per_client
        self._clients: OrderedDict[str, OrderedDict[str, Entry]] = OrderedDict()
        self._ahead: dict[str, Lookahead] = {}
        self._lock = threading.Lock()

    def longest_prefix(self, client: str, text: str) -> tuple[str, Entry | None]:
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
            if not text and "" in entries:  # the empty text only ever matches itself
                hit = entries[""]
            ahead = self._ahead.get(client)
            if ahead is not None and ahead.text and len(ahead.text) >= len(best) and len(text) > len(ahead.text) \
                    and text.startswith(ahead.text) and text[len(ahead.text)] in ahead.rows:
                i = ahead.rows[text[len(ahead.text)]]
                best = text[:len(ahead.text) + 1]
                hit = Entry(tuple(s[:, i:i + 1].clone() for s in ahead.state), ahead.logprobs[i].clone())  # (L, 1, H)
                self._put(entries, best, hit)  # kept like any other text (for a later deletion, say)
            elif hit is not None:
                entries.move_to_end(best)
            return best, hit

    def put(self, client: str, text: str, entry: Entry) -> None:
        with self._lock:
            entries = self._clients.get(client)
            if entries is None:
                entries = self._clients[client] = OrderedDict()
                while len(self._clients) > self.max_clients:
                    self._ahead.pop(self._clients.popitem(last=False)[0], None)
            self._clients.move_to_end(client)
            self._put(entries, text, entry)

    def _put(self, entries: OrderedDict[str, Entry], text: str, entry: Entry) -> None:
        entries[text] = entry
        entries.move_to_end(text)
        while len(entries) > self.per_client:
            entries.popitem(last=False)

    def lookahead(self, client: str, ahead: Lookahead) -> None:
        """Set the client's lookahead (a client not in the cache is not added)."""
        with self._lock:
            if client in self._clients:
                self._ahead[client] = ahead

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the cache holds (states and log-probabilities, lookaheads included)."""
        with self._lock:
            out = [t for entries in self._clients.values() for e in entries.values() for t in (*e.state, e.logprobs)]
            return out + [t for a in self._ahead.values() for t in (*a.state, a.logprobs)]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(e) for e in self._clients.values())

    def clear(self) -> None:
        with self._lock:
            self._clients.clear()
            self._ahead.clear()
