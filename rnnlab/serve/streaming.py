"""Token-by-token generation for streaming responses, on top of the model contract.

The same decoding as ``rnnlab.sampling.generate_ids`` (warm up on the prefix once, then one step
per token with the state carried, the next token picked by ``sampling.next_token``), but as an
iterator, so a server can send each token as soon as it exists.
"""
from __future__ import annotations

from typing import Iterator

import torch

from ..errors import RnnlabError
from ..models import LanguageModel
from ..sampling import next_token


def iter_generate_ids(model: LanguageModel, prefix_ids: list[int], length: int, temperature: float = 0.0,
                      top_k: int = 0, top_p: float = 1.0,
                      generator: torch.Generator | None = None) -> Iterator[int]:
    """Yield ``length`` token ids continuing ``prefix_ids``, one at a time."""
    if not prefix_ids:
        raise RnnlabError("generation needs a non-empty prefix")
    if length <= 0:
        return
    device = model.device
    with torch.inference_mode():
        state = model.begin_state(1, device)
        logits, state = model(torch.tensor([prefix_ids], dtype=torch.long, device=device), state)  # (1, P, V)
        last = logits[:, -1]  # (1, V)
    for t in range(length):
        with torch.inference_mode():
            tok = next_token(last, temperature, top_k, top_p, generator)  # (1,)
            if t + 1 < length:
                logits, state = model(tok[:, None], state)  # (1, 1, V)
                last = logits[:, -1]
        yield int(tok[0])
