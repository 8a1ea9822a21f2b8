"""Held-out evaluation: the mean cross-entropy of every next-token prediction, read in order.

``lm_loss`` is the one cross-entropy of a language model's logits: training, evaluation and
adaptation (``rnnlab.adaptation``) all compute their loss with it."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .data.batching import Ids, as_long
from .errors import RnnlabError
from .metrics import bits_per_token, perplexity
from .models import LanguageModel
from .precision import autocast

def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy in nats of next-token ``logits`` (B, T, V) against ``targets`` (B, T): the mean
    over every target (``reduction="sum"``: their sum)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)  # (B*T, V)


def to_device(ids: Ids, device: torch.device) -> Ids:
    """Tensors move to the model's device; NumPy ids (a memory-mapped corpus) stay where they are
    and each minibatch is moved when it is read."""
    return ids.to(device) if isinstance(ids, torch.Tensor) else ids


@torch.no_grad()
def evaluate(model: LanguageModel, ids: Ids, batch_size: int = 32, num_steps: int = 35,
             precision: str = "fp32") -> dict:
    """Mean NLL over every next-token prediction of ``ids``, read in order (``precision`` bf16:
    the forward passes under bfloat16 autocast, the sums float64).

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
            with autocast(device, precision):
                logits, state = model(x, state)
                nll = lm_loss(logits, y, reduction="sum")
            total += nll
            count += y.numel()

    run_rows(ids[:b * row].reshape(b, row), ids[1:b * row + 1].reshape(b, row))  # (b, row)
    if b * row < n_targets:
        run_rows(ids[b * row:-1].reshape(1, -1), ids[b * row + 1:].reshape(1, -1))  # the tail, one row
    model.train(was_training)
    loss = total.item() / count
    return {"loss": loss, "ppl": perplexity(loss), "bpc": bits_per_token(loss), "tokens": count}
