"""Text generation: warm up on the prefix once, then one step at a time carrying the state.

Greedy decoding (the book's ``predict_ch8``) is ``temperature=0``; otherwise the next token is
drawn from softmax(logits / temperature), optionally restricted to the ``top_k`` most likely
tokens and/or the smallest set whose probability reaches ``top_p`` (nucleus sampling).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .data.vocab import Vocab
from .errors import RnnlabError
from .models import LanguageModel
from .models.step import BatchStep


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k / top-p set. logits: (N, V) -> (N, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token for each row. logits: (N, V) -> ids (N,)."""
    if temperature <= 0 or top_k == 1:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = torch.softmax(logits, dim=-1)  # (N, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate_ids(model: LanguageModel, prefix_ids: list[int], length: int, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
                 generator: torch.Generator | None = None, suppress: Sequence[int] = ()) -> torch.Tensor:
    """Continue ``prefix_ids`` by ``length`` tokens for ``num_samples`` rows at once.

    Returns the generated ids only, (num_samples, length). The prefix is run through the model
    once (warm-up); each new token then costs one step with the state carried. Ids in
    ``suppress`` (e.g. ``<unk>``, which stands for no real text) are never generated.
    """
    if not prefix_ids:
        raise RnnlabError("generation needs a non-empty prefix")
    was_training = model.training
    model.eval()
    device = model.device
    prefix = torch.tensor(prefix_ids, dtype=torch.long, device=device).expand(num_samples, -1)  # (N, P)
    state = model.begin_state(num_samples, device)
    logits, state = model(prefix, state)  # (N, P, V)
    last = logits[:, -1]  # (N, V)
    batch_step = BatchStep.for_model(model)
    banned = torch.tensor(list(suppress), dtype=torch.long, device=device)
    if (temperature <= 0 or top_k == 1) and length > 0:  # greedy: the whole loop in C++ where it can
        ids = batch_step.greedy(last, state, length, banned)
        if ids is not None:
            model.train(was_training)
            return ids
    step = _stepper(batch_step, state)
    out = []
    for t in range(length):
        if len(banned):
            last = last.index_fill(-1, banned, float("-inf"))
        tok = next_token(last, temperature, top_k, top_p, generator)  # (N,)
        out.append(tok)
        if t + 1 < length:
            last = step(tok)  # (N, V)
    model.train(was_training)
    return torch.stack(out, dim=1) if out else torch.empty(num_samples, 0, dtype=torch.long, device=device)


def _stepper(batch_step: BatchStep, state):
    """``step(ids (N,)) -> logits (N, V)`` carrying the state: the model's specialised one-token
    step (``BatchStep``; a one-step ``forward`` for a model it does not fit)."""

    def step(tok: torch.Tensor) -> torch.Tensor:
        nonlocal state
        logits, state = batch_step(tok, state)  # (N, V)
        return logits

    return step


def generate(model: LanguageModel, vocab: Vocab, prefix: str, length: int, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None) -> str:
    """The prefix followed by ``length`` generated tokens (greedy by default), as text: one
    sample of ``generate_text``."""
    return generate_text(model, vocab, prefix, length, temperature, top_k, top_p, 1, generator)[0]


def generate_text(model: LanguageModel, vocab: Vocab, prefix: str, length: int, temperature: float = 0.0,
                  top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
                  generator: torch.Generator | None = None, strict: bool = False, warn=None) -> list[str]:
    """``num_samples`` continuations of ``prefix`` as text (each starting with the prefix).

    Prefix tokens the vocabulary lacks become ``<unk>`` (``warn`` is told which), or raise with
    ``strict``. An empty prefix starts from a token drawn from the corpus' unigram frequencies
    (the most frequent one when greedy), which is then part of the text.
    """
    tokens = list(prefix) if vocab.separator == "" else prefix.split()
    unknown = vocab.unknown(tokens)
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        if vocab.unk is None:
            raise RnnlabError(f"the prefix has tokens this model never saw ({shown}) and the model has no <unk>; "
                              f"remove them from the prefix")
        if strict:
            raise RnnlabError(f"the prefix has tokens this model never saw ({shown}); remove them, or drop --strict "
                              f"to read them as <unk>")
        if warn is not None:
            warn(f"the prefix has tokens this model never saw ({shown}); they are read as <unk>")
    ids = vocab.encode(tokens)
    if not ids:  # an empty prefix: the first token comes from the corpus' unigram distribution
        if length == 0:
            return [""] * num_samples
        counts = torch.tensor(vocab.counts, dtype=torch.float)
        if vocab.unk_id is not None:
            counts[vocab.unk_id] = 0
        if counts.sum() <= 0:
            raise RnnlabError("an empty prefix needs token counts in vocab.json; give a --prefix")
        if temperature <= 0:
            firsts = [int(counts.argmax())] * num_samples
        else:
            firsts = torch.multinomial(counts, num_samples, replacement=True, generator=generator).tolist()
        return [generate_text(model, vocab, vocab.idx_to_token[f], length - 1, temperature, top_k, top_p, 1,
                              generator)[0] for f in firsts]
    gen = generate_ids(model, ids, length, temperature, top_k, top_p, num_samples, generator, _no_unk(vocab))
    out = []
    for g in gen:
        text = vocab.decode(g.tolist())
        out.append(prefix + (vocab.separator if prefix and text else "") + text)
    return out


def _no_unk(vocab: Vocab) -> list[int]:
    """``<unk>`` is not text: never generate it (a vocabulary of only ``<unk>`` keeps it)."""
    return [vocab.unk_id] if vocab.unk_id is not None and len(vocab) > 1 else []
