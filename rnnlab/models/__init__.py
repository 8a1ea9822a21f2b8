"""Models: one contract (``rnnlab.models.base``), built from a ``ModelConfig`` by ``build_model``.

``cells/`` holds one module per recurrent cell and the registry that names them; ``stack.py`` runs
a cell's layers (scratch, fast), ``rnnlm.py`` wraps them into a language model, ``unrolled.py`` is
the AWS post's many-to-one network, ``native.py`` builds the C++ loops the cells' kernels use.
"""
from __future__ import annotations

from .base import LanguageModel, State, detach_state, grow_vocabulary
from .cells import get_cell
from .config import ModelConfig, model_names
from .rnnlm import RNNLM
from .unrolled import UnrolledRNN, window_dataset


def precision_notes(cfg: ModelConfig, device_type: str) -> list[str]:
    """What of the model ``cfg`` builds stays float32 under bfloat16 autocast on ``device_type``,
    and why (one sentence each; the cell says it: ``Cell.bf16_note``)."""
    if cfg.model == "unrolled":
        return []
    note = get_cell(cfg.model).bf16_note(cfg, device_type)
    return [note] if note else []


def build_model(cfg: ModelConfig) -> LanguageModel:
    """The factory: the model family for ``cfg.model`` (a registered cell, or ``unrolled``)."""
    cfg.validate()
    if cfg.model == "unrolled":
        return UnrolledRNN(cfg)
    return RNNLM(cfg)


__all__ = ["LanguageModel", "ModelConfig", "RNNLM", "State", "UnrolledRNN", "build_model", "detach_state", "grow_vocabulary",
           "model_names", "precision_notes", "window_dataset"]
