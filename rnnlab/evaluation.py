"""Held-out evaluation: the mean cross-entropy of every next-token prediction, read in order."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .data.batching import Ids, as_long
from .errors import RnnlabError
from .metrics import bits_per_token, perplexity
from .models import LanguageModel


def to_device(ids: Ids, device: torch.device) -> Ids:
    """Tensors move to the model's device; NumPy ids (a memory-mapped corpus) stay where they are
    and each minibatch is moved when it is read."""
    return ids.to(device) if isinstance(ids, torch.Tensor) else ids


@torch.no_grad()
def evaluate(model: LanguageModel, ids: Ids, batch_size: int = 32, num_steps: int = 35) -> dict:
    """Mean NLL over every next-token prediction of ``ids``, read in order.

    The stream is cut into ``batch_size`` contiguous rows processed side by side in chunks of
    ``num_steps`` with the state carried across chunks; the few targets left over after the rows
    (fewer than ``batch_size``) are scored as one more row. Returns loss, ppl, bpc, tokens.
    ``ids`` may be a long tensor or a NumPy array (e.g. a memmap, read chunk by chunk).
    """
    was_training = model.training
    model.eval()
    device = model.device
    ids = to_device(ids, device)
    n_targets = len(ids) - 1
    if n_targets < 1:
        raise RnnlabError("evaluation needs at least 2 tokens")
    b = max(1, min(batch_size, n_targets))
    row = n_targets // b
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0

    def run_rows(xs: Ids, ys: Ids) -> None:
        nonlocal total, count
        state = model.begin_state(xs.shape[0], device)
        for i in range(0, xs.shape[1], num_steps):
            x = as_long(xs[:, i:i + num_steps]).to(device)  # (b, <=T)
            y = as_long(ys[:, i:i + num_steps]).to(device)  # (b, <=T)
            logits, state = model(x, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            count += y.numel()

    run_rows(ids[:b * row].reshape(b, row), ids[1:b * row + 1].reshape(b, row))  # (b, row)
    if b * row < n_targets:
        run_rows(ids[b * row:-1].reshape(1, -1), ids[b * row + 1:].reshape(1, -1))  # the tail, one row
    model.train(was_training)
    loss = total.item() / count
    return {"loss": loss, "ppl": perplexity(loss), "bpc": bits_per_token(loss), "tokens": count}


def dynamic_evaluate(model: LanguageModel, ids: Ids, lr: float = 2e-4, chunk: int = 20, method: str = "rms",
                     stats_ids: Ids | None = None, stats_chunks: int = 100, decay: float = 0.0,
                     eps: float = 1e-5) -> dict:
    """Dynamic evaluation (Krause et al. 2018): read ``ids`` in order, one row, ``chunk`` tokens at
    a time with the state carried; score each chunk first, then take one gradient step on it, so
    the model adapts to the text it has read. A private copy of ``model`` is adapted; the model
    (and any checkpoint on disk) is left unchanged.

    ``method="rms"``: the step is ``lr * g / sqrt(MS)``, with MS the mean squared gradient of
    ``stats_chunks`` chunks of ``stats_ids`` (the training text; measured once, before scoring);
    ``"sgd"``: ``lr * g``. ``decay`` pulls the weights back toward the original ones each step.
    Returns the same figures as ``evaluate`` (loss, ppl, bpc, tokens) for the adapted reading.
    """
    import copy

    if method not in ("rms", "sgd"):
        raise RnnlabError(f"unknown dynamic-evaluation method {method!r}; use rms or sgd")
    if method == "rms" and stats_ids is None:
        raise RnnlabError("rms dynamic evaluation needs the training text (stats_ids) for its gradient scale")
    m = copy.deepcopy(model)
    m.eval()  # no dropout; gradients still flow
    params = [p for p in m.parameters() if p.requires_grad]
    device = m.device
    ids = to_device(ids, device)
    n_targets = len(ids) - 1
    if n_targets < 1:
        raise RnnlabError("evaluation needs at least 2 tokens")
    scale = _rms_scale(m, params, to_device(stats_ids, device), chunk, stats_chunks, eps) if method == "rms" else None
    origin = [p.detach().clone() for p in params] if decay else None
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    state = m.begin_state(1, device)
    for i in range(0, n_targets, chunk):
        x = as_long(ids[i:min(i + chunk, n_targets)]).to(device)[None]  # (1, <=chunk)
        y = as_long(ids[i + 1:min(i + chunk, n_targets) + 1]).to(device)[None]
        state = tuple(s.detach() for s in state)
        logits, state = m(x, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))  # (chunk, V) vs (chunk,)
        total += loss.detach().double() * y.numel()
        count += y.numel()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for k, (p, g) in enumerate(zip(params, grads)):
                if g is not None:
                    p.add_(g / scale[k] if scale is not None else g, alpha=-lr)
                if origin is not None:
                    p.add_(origin[k] - p, alpha=decay)
    loss = total.item() / count
    return {"loss": loss, "ppl": perplexity(loss), "bpc": bits_per_token(loss), "tokens": count}


def _rms_scale(m: LanguageModel, params: list, stats_ids: Ids, chunk: int, n_chunks: int, eps: float) -> list:
    """sqrt(mean squared gradient) + eps per parameter, over ``n_chunks`` consecutive chunks of
    the training text (state carried, as when scoring), spread over the text in runs of 20."""
    ms = [torch.zeros_like(p) for p in params]
    usable = len(stats_ids) - 1 - 20 * chunk
    if usable <= 0:
        raise RnnlabError("the training text is too short for the dynamic evaluation's gradient statistics")
    gen = torch.Generator().manual_seed(0)
    state = None
    for k in range(n_chunks):
        if k % 20 == 0:  # a new run of 20 consecutive chunks somewhere in the text
            start = int(torch.randint(0, usable, (1,), generator=gen))
            state = m.begin_state(1, m.device)
        j = start + (k % 20) * chunk
        x = as_long(stats_ids[j:j + chunk]).to(m.device)[None]  # (1, chunk)
        y = as_long(stats_ids[j + 1:j + chunk + 1]).to(m.device)[None]
        logits, state = m(x, tuple(s.detach() for s in state))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        for acc, g in zip(ms, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                acc += g * g / n_chunks
    return [a.sqrt() + eps for a in ms]
