"""Online adaptation of the keyboard: each client's own copy of the model learns what that client
types (``rnnlab serve --adapt``).

A client that has typed enough gets an ``Adapter`` (``rnnlab.adaptation``: dynamic evaluation,
Krause et al. 2018): a private copy of the weights that takes one RMS-scaled gradient step per
``chunk`` characters of the client's *finished* text (up to its last word boundary: the word being
typed may still change). Its suggestions then come from an engine over that copy.

    request(text, client) ──► observe: new finished text? ──► adapter.read (at most
        MAX_STEPS_PER_REQUEST steps; the rest on later requests) ──► clear that client's cache
    ──► the client's engine (adapted) or the shared one (no adaptation yet, anonymous clients)

Bounds: at most ``AdaptConfig.clients`` adapted clients (the least recently seen is dropped). Each
holds a copy of the weights, the weights its copy lays out for one-token steps, its reading state
and a state cache of at most ``CLIENT_CACHE_ENTRIES`` texts (plus one lookahead); the bytes of
those tensors are *measured* after every request, and clients are dropped, least recently seen
first, while all of them together hold more than ``clients`` x the most one client can hold
(``status()``: ``bytes`` now, ``bytes_per_client``, ``max_bytes``). A dropped client's tensors are
freed at once (no reference cycle keeps them for the garbage collector). The work per request is
bounded. A client whose text no longer extends what it has typed (it deleted
or started over) keeps its adapted weights; the model re-reads the common part without learning.
The adapted weights live in memory only: the checkpoint is never written. ``reset(client)``
forgets a client.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from ..config import AdaptConfig, SuggestConfig, check_text
from ..data.batching import Ids
from ..data.tokenizer import Tokenizer
from ..errors import UsageError
from ..adaptation import Adapter, rms_scale, step_rule
from ..models import LanguageModel
from .cache import StateCache
from .engine import SuggestEngine
from .text import split_partial_word
from .types import SuggestRequest, Suggestions

MAX_STEPS_PER_REQUEST = 8  # adaptation work one request may trigger (a pasted text is learnt over later requests)
CLIENT_CACHE_ENTRIES = 16  # texts whose states one adapted client keeps


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    sizes = {}
    for t in tensors:
        st = t.untyped_storage()
        sizes[st.data_ptr()] = st.nbytes()
    return sum(sizes.values())


def finished_text(mtext: str) -> str:
    """The model text up to and including its last word boundary (the word being typed may change)."""
    return split_partial_word(mtext)[0]


class _Client:
    """One client's adapted copy, its engine, and how far it has read the client's text."""

    def __init__(self, owner: AdaptiveSuggester):
        self.owner = owner
        self.adapter = Adapter(owner.model, owner.lr, owner.settings.chunk, owner.scale)
        self.engine = SuggestEngine(self.adapter.model, owner.tokenizer, owner.config,
                                    StateCache(1, CLIENT_CACHE_ENTRIES), max_batch=1, words=owner.words,
                                    recent=owner.base.recent)
        self.seen: list[int] = []  # the finished text's ids at the last request
        self.pos = 0  # the next input position in ``seen`` the adapter has not read
        self.bytes = 0  # measured after each request (``measure``)

    def tensors(self) -> list:
        """Every tensor this client holds: its weights, their one-token layout, its reading state
        (and decay anchor), its cached states."""
        m, a = self.adapter.model, self.adapter
        return [*m.parameters(), *m.buffers(), *m.derived_tensors(), *a.state, *(a.origin or []),
                *self.engine.tensors()]

    def measure(self) -> int:
        self.bytes = storage_bytes(self.tensors())
        return self.bytes

    def close(self) -> None:
        self.engine.close()
        self.engine.cache.clear()

    def observe(self, text: str) -> int:
        """Read the new finished text of ``text`` (whole chunks, bounded); return the steps taken."""
        tok = self.owner.tokenizer
        ids = tok.ids(finished_text(tok.model_text(text)), after=0)  # the adapter reads on from its own state
        n = 0
        limit = min(len(ids), len(self.seen))
        while n < limit and ids[n] == self.seen[n]:
            n += 1
        if n < self.pos + 1 and self.pos:  # the text it learnt from changed: re-read the common part
            self.pos = max(n - 1, 0)
            self.adapter.restart(ids_tensor(ids[:self.pos]) if self.pos else None)
        self.seen = ids
        chunk = self.owner.settings.chunk
        whole = min((len(ids) - 1 - self.pos) // chunk, MAX_STEPS_PER_REQUEST)
        if whole <= 0:
            return 0
        end = self.pos + whole * chunk + 1
        self.adapter.read(ids_tensor(ids[self.pos:end]))  # inputs pos..end-2, targets pos+1..end-1
        self.pos = end - 1
        self.engine.cache.clear()  # the cached states were computed with the old weights
        return whole


def ids_tensor(ids: list[int]) -> Ids:
    import torch

    return torch.tensor(ids, dtype=torch.long)


class AdaptiveSuggester:
    """Suggestions that adapt to each client (see the module docstring). ``train_ids``: the model's
    training text, for the RMS step scale; without it the steps are plain SGD (``adaptation.step_rule``).
    ``words``: the word model of the word search (each client's adapted copy scores its candidates;
    the recent-word cache is shared). Thread-safe: requests are answered one at a time."""

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, config: SuggestConfig | None = None,
                 settings: AdaptConfig | None = None, train_ids: Ids | None = None,
                 cache: StateCache | None = None, words=None):
        if tokenizer.word_level:
            raise UsageError("--adapt needs a character model (the keyboard learns the finished text character "
                             "by character)")
        self.model, self.tokenizer = model, tokenizer
        self.config = config if config is not None else SuggestConfig()
        self.settings = settings if settings is not None else AdaptConfig()
        self.settings.validate()
        self.method, self.lr = step_rule(self.settings, train_ids)
        self.scale = rms_scale(model, train_ids, self.settings.chunk) if self.method == "rms" else None
        self.words = words  # the word search's model (``store.Words``), shared by every client's engine
        self.base = SuggestEngine(model, tokenizer, self.config, cache, max_batch=1, words=words)
        self.client_bound = self._client_bound()
        self.max_bytes = self.client_bound * self.settings.clients
        self.clients: OrderedDict[str, _Client] = OrderedDict()
        self.steps = 0
        self._lock = threading.Lock()

    def _client_bound(self) -> int:
        """The most one adapted client can hold: the weights and their one-token layout (laid out
        here once on the shared model, as each copy lays out its own), the reading state, its
        engine's token masks, and the cache's texts and lookahead rows (a state and V float32
        log-probabilities each)."""
        import torch

        model = self.model
        device = model.device
        state = model.begin_state(1, device)
        with torch.inference_mode():
            model.step(torch.zeros(1, dtype=torch.long, device=device), state)
        rows = CLIENT_CACHE_ENTRIES + self.config.beam_width  # cached texts + the lookahead's first characters
        weights = storage_bytes([*model.parameters(), *model.buffers(), *model.derived_tensors()])
        weights += storage_bytes(self.base.tensors(cache=False))  # each client's engine has these masks
        return weights + storage_bytes(state) + rows * (storage_bytes(state) + 4 * len(self.tokenizer.vocab))

    def suggest(self, text: str, k: int = 5, client: str = "") -> Suggestions:
        """``SuggestEngine.suggest``, from ``client``'s adapted copy once it has one. Anonymous
        requests (no client id) use the shared model and teach nothing."""
        check_text(text)
        SuggestConfig(k=k).validate()
        with self._lock:
            engine = self.base
            if client:
                c = self.clients.pop(client, None) or _Client(self)
                self.clients[client] = c  # most recently seen last
                self._evict()
                taken = c.observe(text)
                self.steps += taken
                if c.adapter.steps:
                    engine = c.engine
            answer = engine.suggest_batch([SuggestRequest(text, k, client)])[0]
            if client:
                c.measure()
                self._evict()
            return answer

    def _evict(self) -> None:
        """Drop the least recently seen clients (never the latest) while there are too many, or
        while their measured bytes are over the bound; free each one's tensors at once."""
        while len(self.clients) > 1 and (len(self.clients) > self.settings.clients or
                                         sum(c.bytes for c in self.clients.values()) > self.max_bytes):
            self.clients.popitem(last=False)[1].close()

    def reset(self, client: str) -> bool:
        """Forget ``client``'s adaptation; True if it had one."""
        with self._lock:
            c = self.clients.pop(client, None)
            if c is not None:
                c.close()
            return c is not None

    def status(self) -> dict:
        """What ``/healthz`` shows: ``bytes`` is measured (the tensors all adapted clients hold now),
        ``bytes_per_client`` the most one client can hold, ``max_bytes`` the bound on ``bytes``."""
        with self._lock:
            sizes = [c.bytes for c in self.clients.values()]
            return {"clients": len(self.clients), "max_clients": self.settings.clients, "bytes": sum(sizes),
                    "largest_client_bytes": max(sizes, default=0), "bytes_per_client": self.client_bound,
                    "max_bytes": self.max_bytes, "steps": self.steps,
                    "method": self.method, "lr": self.lr}

    def close(self) -> None:
        with self._lock:
            for c in self.clients.values():
                c.close()
            self.clients.clear()
        self.base.close()
