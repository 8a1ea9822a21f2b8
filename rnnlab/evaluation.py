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
