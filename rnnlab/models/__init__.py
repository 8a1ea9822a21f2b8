"""Models: one contract (``rnnlab.models.base``), built from a ``ModelConfig`` by ``build_model``."""
from __future__ import annotations

from ..config import ModelConfig
from .base import LanguageModel, State, detach_state
from .fast import FastRNNLM
from .rnnlm import RNNLM
from .unrolled import UnrolledRNN, window_dataset


def build_model(cfg: ModelConfig) -> LanguageModel:
    """The factory: the only place that looks at ``cfg.model`` / ``cfg.impl``."""
    cfg.validate()
    if cfg.model == "unrolled":
        return UnrolledRNN(cfg)
    if cfg.impl == "fast":
        return FastRNNLM(cfg)
    return RNNLM(cfg)


__all__ = ["FastRNNLM", "LanguageModel", "RNNLM", "State", "UnrolledRNN", "build_model", "detach_state", "window_dataset"]
