"""Prototype fixes for the predictive keyboard, as keyboards of ``rnnlab.keyboard``'s protocol
that sit on top of rnnlab's ``SuggestEngine`` (nothing here changes the engine).

* ``DropTyped``: never show the word exactly as typed (accepting it would insert nothing).
* ``LexiconFilter``: ask the engine for more completions, keep (or demote) the words of a lexicon.
* ``WordScorer``: the character model's exact probability of any given word completion,
  ``P(rest of the word, then a word boundary | text)``, for many candidates at once (the candidates
  of one text share their prefixes: one model row per distinct prefix, depth by depth).
* ``MixKeyboard``: candidates from the engine's beam, the bigram's top words for the partial and
  the user's recent words, each scored exactly by the character model and mixed::

      P(w | text, partial) = a * P_nn(w | partial) + b * P_bigram(w | previous word, partial)
                             + c * P_cache(w | partial)

  with every term a distribution over the words that start with the typed part:
  ``P_nn(w | partial)`` the character model's probability of the rest of ``w`` and a boundary;
  ``P_bigram(w | v, partial) = P(w | v) / sum of P(w' | v) over the w' starting with the partial``;
  ``P_cache(w | partial)`` the frequency of ``w`` among the last ``cache_words`` words of the text
  that start with the partial (its weight goes to the other terms when there are none).
  With ``drop_typed`` (the default) the typed part itself is never shown and every term is
  renormalised to the words that *extend* it (the simulated user only asks before a keystroke of
  the word, so the word is longer than what is typed): ``P_nn(w) / (1 - P_nn(typed part))``, and
  the bigram's and the cache's mass likewise without the typed part. Words outside the lexicon
  (the bigram's vocabulary) are multiplied by ``oov_factor`` (1: no change; about 0.25 matches the
  measured calibration of a 256-unit LSTM: shown non-words were right 3-4x less often than their
  probability said, lexicon words 1.5-2x more often).

These are for measuring (``benchmarks/keyboard.py``-style runs); a production version belongs in
the engine's search (see the report in the keyboard issue).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from .simulate import RnnlabKeyboard
from .ngram import BigramModel, last_word
from ..suggest import word_spans


class DropTyped:
    """A keyboard that never shows the typed part itself as a completion."""

    def __init__(self, keyboard, name: str | None = None):
        self.keyboard = keyboard
        self.name = name or f"{getattr(keyboard, 'name', 'kb')}-droptyped"

    def completions(self, context, partial, k):
        return self.completions_batch([(context, partial)], k)[0]

    def completions_batch(self, queries, k, streams=None):
        answers = self.keyboard.completions_batch(queries, k + 1, streams)
        return [[w for w in ans if w != p][:k] for (_, p), ans in zip(queries, answers)]


class LexiconFilter:
    """Ask the keyboard for ``ask`` completions and show the lexicon words among them first, in
    the keyboard's order (``mode="filter"``: only those; ``"demote"``: the others after them)."""

    def __init__(self, keyboard, lexicon: Iterable[str], ask: int = 20, mode: str = "filter",
                 drop_typed: bool = True, name: str | None = None):
        if mode not in ("filter", "demote"):
            raise ValueError(f"mode must be filter or demote, got {mode!r}")
        self.keyboard, self.lexicon, self.ask, self.mode = keyboard, frozenset(lexicon), ask, mode
        self.drop_typed = drop_typed
        self.name = name or f"lexicon-{mode}-{ask}"

    def completions(self, context, partial, k):
        return self.completions_batch([(context, partial)], k)[0]

    def completions_batch(self, queries, k, streams=None):
        answers = self.keyboard.completions_batch(queries, max(k, self.ask), streams)
        out = []
        for (_, p), ans in zip(queries, answers):
            ans = [w for w in ans if not (self.drop_typed and w == p)]
            known = [w for w in ans if w in self.lexicon]
            if self.mode == "demote":
                known += [w for w in ans if w not in self.lexicon]
            out.append(known[:k])
        return out


class WordScorer:
    """Exact log P(continuation, then a word boundary | text) under a character model, for many
    (text, client, continuations) at once; the state of each text comes from the engine's cache."""

    def __init__(self, engine):
        if engine.word_level:
            raise ValueError("WordScorer needs a character model")
        self.engine = engine
        self.index = {t: i for i, t in enumerate(engine.vocab.idx_to_token)}
        self.boundary = engine.boundary_ids  # (n_boundary,) the tokens that end a word

    @torch.inference_mode()
    def score(self, items: Sequence[tuple[str, str, Sequence[str]]]) -> list[list[float]]:
        """``items``: (text, client, continuations) -> per item, log P of each continuation
        followed by any boundary character (-inf if it holds a character the model does not know)."""
        e = self.engine
        entries = [e.context_entry(e.tokenizer.model_text(text), client)[0] for text, client, _ in items]
        out = [[-math.inf] * len(conts) for _, _, conts in items]
        # depth 0: the texts themselves
        states = [en.state for en in entries]
        state = tuple(torch.cat(p, dim=1) for p in zip(*states))  # each (L, Q, H)
        lps = torch.stack([en.logprobs for en in entries])  # (Q, V)
        # nodes of the previous depth: (item, prefix) -> row
        rows = {(q, ""): q for q in range(len(items))}
        logp = {(q, ""): 0.0 for q in range(len(items))}
        depth = 0
        want = [{c: j for j, c in enumerate(conts)} for _, _, conts in items]
        maxlen = max((len(c) for _, _, conts in items for c in conts), default=0)
        while True:
            end = torch.logsumexp(lps.index_select(1, self.boundary), dim=1).tolist()  # (N,)
            for (q, pre), r in rows.items():
                j = want[q].get(pre)
                if j is not None:
                    out[q][j] = logp[(q, pre)] + end[r]
            if depth >= maxlen:
                break
            # the next depth: each distinct prefix one character longer
            nxt, parent, tok = {}, [], []
            for q, (_, _, conts) in enumerate(items):
                for c in conts:
                    if len(c) > depth and (q, c[:depth]) in rows and (q, c[:depth + 1]) not in nxt:
                        t = self.index.get(c[depth])
                        if t is None:
                            continue
                        nxt[(q, c[:depth + 1])] = len(parent)
                        parent.append(rows[(q, c[:depth])])
                        tok.append(t)
            if not nxt:
                break
            idx = torch.tensor(parent, device=e.device)  # (N,) each new prefix's parent row
            ids = torch.tensor(tok, device=e.device)  # (N,) and its last character
            picked = lps[idx, ids].tolist()  # log P(that character | the parent prefix)
            for (q, pre), r in nxt.items():
                logp[(q, pre)] = logp[(q, pre[:-1])] + picked[r]
            logits, state = e.model.step(ids, tuple(s.index_select(1, idx) for s in state))  # (N, V)
            lps = torch.log_softmax(logits.float(), dim=-1)
            rows = nxt
            depth += 1
        return out


class MixKeyboard:
    """rnnlab's engine re-ranked at the word level (see the module docstring).

    ``beam_k`` completions from the engine's search, ``lexicon_k`` from the bigram (the words that
    start with the partial, best first) and up to ``cache_k`` of the user's recent words starting
    with it are the candidates; ``weights = (a, b, c)`` mix the character model, the bigram and the
    cache (``b = c = 0``: the character model alone, re-scoring a larger candidate set).
    """

    def __init__(self, nn: RnnlabKeyboard, bigram: BigramModel | None = None, weights=(1.0, 0.0, 0.0),
                 beam_k: int = 10, lexicon_k: int = 20, cache_k: int = 5, cache_words: int = 500,
                 oov_factor: float = 1.0, drop_typed: bool = True, name: str = "mix"):
        self.nn, self.bigram, self.name = nn, bigram, name
        self.a, self.b, self.c = weights
        self.beam_k, self.lexicon_k, self.cache_k, self.cache_words = beam_k, lexicon_k, cache_k, cache_words
        self.oov_factor, self.drop_typed = oov_factor, drop_typed
        self.scorer = WordScorer(nn.engine)
        self.lexicon = frozenset(bigram.unigram) if bigram is not None else frozenset()

    def completions(self, context, partial, k):
        return self.completions_batch([(context, partial)], k)[0]

    def close(self) -> None:
        self.nn.close()

    def _bigram_cond(self, prev: str, partial: str) -> tuple[dict[str, float], float]:
        """The bigram's top words for the partial with P(w | prev), and the mass of all the words
        that start with the partial after prev."""
        m = self.bigram
        return dict(m.top(prev, partial, max(self.lexicon_k, 1))), m.prefix_mass(prev, partial)

    def _recent(self, context: str) -> list[str]:
        tail = context[-8 * self.cache_words:]
        spans = word_spans(tail)
        if spans and spans[0][0] == 0 and len(tail) < len(context):
            spans = spans[1:]  # cut inside a word
        return [tail[s:e] for s, e in spans[-self.cache_words:]]

    def completions_batch(self, queries, k, streams=None):
        streams = list(streams) if streams is not None else [""] * len(queries)
        beams = self.nn.completions_batch(queries, self.beam_k, streams) if self.beam_k else [[] for _ in queries]
        cands, extra = [], []
        for (ctx, p), beam in zip(queries, beams):
            cand = dict.fromkeys(w for w in beam if w.startswith(p))  # (the engine's next words may differ in case)
            bg, mass, cache = {}, 0.0, Counter()
            if self.bigram is not None and (self.lexicon_k or self.b):
                bg, mass = self._bigram_cond(last_word(ctx), p)
                cand.update(dict.fromkeys(list(bg)[:self.lexicon_k]))
            if self.c or self.cache_k:
                cache = Counter(w for w in self._recent(ctx) if w.startswith(p))
                cand.update(dict.fromkeys(w for w, _ in cache.most_common(self.cache_k)))
            if self.drop_typed:
                cand.pop(p, None)
            cands.append(list(cand))
            extra.append((bg, mass, cache))
        clients = [f"{self.nn.client_prefix}:{s}" for s in streams]
        # each candidate's continuation, and "" (the typed part as a whole word: the simulated user
        # never wants it, so every term is renormalised to the words that extend the typed part)
        scores = self.scorer.score([(c + p, cl, [w[len(p):] for w in cand] + [""])
                                    for (c, p), cl, cand in zip(queries, clients, cands)])
        out = []
        for (ctx, p), cand, lps, (bg, mass, cache) in zip(queries, cands, scores, extra):
            prev = last_word(ctx) if (self.b or self.bigram is not None) else ""
            nn_norm = max(1.0 - math.exp(lps[-1]), 1e-9) if self.drop_typed and p else 1.0
            if self.drop_typed and p and self.bigram is not None and p in self.lexicon:
                mass -= self.bigram.prob(p, prev)
            if self.drop_typed:
                cache.pop(p, None)
            n_cache = sum(cache.values())
            a, b, c = self.a, self.b, (self.c if n_cache else 0.0)
            if mass <= 1e-12:
                b = 0.0
            tot = a + b + c
            ranked = []
            for w, lp in zip(cand, lps):
                s = a * math.exp(lp) / nn_norm
                if b:
                    s += b * (bg[w] if w in bg else self.bigram.prob(w, prev)) / mass
                if c:
                    s += c * cache[w] / n_cache
                if self.lexicon and w not in self.lexicon:
                    s *= self.oov_factor
                ranked.append((-s / tot, w))
            ranked.sort()
            out.append([w for _, w in ranked[:k]])
        return out
