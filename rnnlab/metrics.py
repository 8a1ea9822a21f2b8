"""Language-model figures from mean cross-entropy in nats per token."""
from __future__ import annotations

import math


def perplexity(mean_nll: float) -> float:
    """exp(mean negative log-likelihood in nats); inf when it overflows."""
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return float("inf")


def bits_per_token(mean_nll: float) -> float:
    """Mean cross-entropy in bits (bits per character for a char model)."""
    return mean_nll / math.log(2)
