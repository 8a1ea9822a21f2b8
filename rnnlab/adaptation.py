"""Adaptation: a private copy of a model that learns the text it reads (Krause et al. 2018's dynamic
evaluation), for ``rnnlab eval --dynamic`` and the keyboard's online adaptation (``serve --adapt``,
``rnnlab.suggest.adapt``). One settings class (``config.AdaptConfig``), one update, one fallback:

    step_rule(settings, train_ids)  rms: lr * g / sqrt(mean g^2 over the training text) (``rms_scale``);
                                    sgd: lr * g; rms without the training text: plain SGD at
                                    SGD_FALLBACK_LR (``training_ids`` says why the text is gone)
    Adapter(model, lr, chunk, scale) reads ids chunk by chunk with the state carried: scores each
                                    chunk (``evaluation.lm_loss``), then takes one step on it
    dynamic_evaluate(model, ids, ...) the adapted reading's loss, perplexity, bits per token
"""
from __future__ import annotations

from typing import Callable

import torch

from .config import AdaptConfig
from .data.batching import Ids, as_long
from .errors import RnnlabError
from .evaluation import lm_loss, to_device
from .metrics import bits_per_token, perplexity
from .models import LanguageModel
from .precision import autocast

SGD_FALLBACK_LR = 0.1  # plain SGD steps when the training text is gone (measured: half the RMS gain)


def step_rule(settings: AdaptConfig, train_ids: Ids | None) -> tuple[str, float]:
    """(method, lr) of the adaptation's steps: ``settings.method`` at ``settings.lr``, except "rms"
    without the training text (``train_ids`` None), which falls back to plain SGD at ``SGD_FALLBACK_LR``."""
    if settings.method == "rms" and train_ids is None:
        return "sgd", SGD_FALLBACK_LR
    return settings.method, settings.lr


def training_ids(ckpt, log: Callable[[str], None] = lambda msg: None) -> Ids | None:
    """The training range of checkpoint ``ckpt``'s corpus as ids (the "rms" step scale's text), or
    None when it cannot be read (then ``step_rule`` falls back to plain SGD; ``log`` says so)."""
    from .data.text_data import prepare_data

    try:
        return prepare_data(ckpt.data_config.replace(), vocab=ckpt.vocab).train_ids
    except (OSError, RnnlabError) as e:
        log(f"rnnlab: the training text is not available ({e}); adaptation takes plain SGD steps "
            f"(lr {SGD_FALLBACK_LR:g})")
        return None


class Adapter:
    """A private copy of a model that adapts to the text it reads (Krause et al. 2018's dynamic
    evaluation): ``read(ids)`` takes the ids ``chunk`` tokens at a time with the state carried,
    scores each chunk, then takes one gradient step on it. The original model is never changed.

    ``scale`` (per parameter, from ``rms_scale``) makes the step ``lr * g / scale`` ("rms");
    without it the step is ``lr * g`` ("sgd"). ``decay`` pulls the weights back toward the
    original ones after each step."""

    def __init__(self, model: LanguageModel, lr: float, chunk: int = 20, scale: list | None = None,
                 decay: float = 0.0, precision: str = "fp32"):
        import copy

        self.model = copy.deepcopy(model)
        self.model.eval()  # no dropout; gradients still flow
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.lr, self.chunk, self.scale, self.decay = lr, chunk, scale, decay
        self.precision = precision  # bf16: forward and loss under autocast, the weights and steps float32
        self.origin = [p.detach().clone() for p in self.params] if decay else None
        self.state = self.model.begin_state(1, self.model.device)
        self.steps = 0

    @property
    def nbytes(self) -> int:
        """Memory the adapted copy holds: its parameters (and the decay anchor)."""
        n = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return n * (2 if self.origin is not None else 1)

    def restart(self, ids: Ids | None = None) -> None:
        """Forget the carried state (keep the adapted weights); with ``ids``, read them first
        without adapting (the context the next ``read`` continues)."""
        self.state = self.model.begin_state(1, self.model.device)
        if ids is not None and len(ids):
            with torch.no_grad(), autocast(self.model.device, self.precision):
                x = as_long(ids).to(self.model.device)[None]  # (1, T)
                _, self.state = self.model(x, self.state)

    def read(self, ids: Ids) -> tuple[float, int]:
        """Adapt to ``ids`` (predicting ``ids[1:]`` from ``ids[:-1]``); return the summed loss of
        the scored targets (before each step) and their number."""
        device = self.model.device
        n_targets = len(ids) - 1
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        for i in range(0, max(n_targets, 0), self.chunk):
            x = as_long(ids[i:min(i + self.chunk, n_targets)]).to(device)[None]  # (1, <=chunk)
            y = as_long(ids[i + 1:min(i + self.chunk, n_targets) + 1]).to(device)[None]
            state = tuple(s.detach() for s in self.state)
            with autocast(device, self.precision):
                logits, self.state = self.model(x, state)
                loss = lm_loss(logits, y)  # (1, chunk, V) vs (1, chunk)
            total += loss.detach().double() * y.numel()
            count += y.numel()
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            with torch.no_grad():
                for k, (p, g) in enumerate(zip(self.params, grads)):
                    if g is not None:
                        p.add_(g / self.scale[k] if self.scale is not None else g, alpha=-self.lr)
                    if self.origin is not None:
                        p.add_(self.origin[k] - p, alpha=self.decay)
            self.steps += 1
        self.state = tuple(s.detach() for s in self.state)
        return total.item(), count


def rms_scale(model: LanguageModel, stats_ids: Ids, chunk: int = 20, n_chunks: int = 100,
              eps: float = 1e-5, precision: str = "fp32") -> list:
    """The "rms" step scale of ``Adapter``: per parameter, sqrt(mean squared gradient) + eps over
    ``n_chunks`` chunks of the training text ``stats_ids`` (the gradients taken in ``precision``)."""
    import copy

    m = copy.deepcopy(model)
    m.eval()
    params = [p for p in m.parameters() if p.requires_grad]
    return _rms_scale(m, params, to_device(stats_ids, m.device), chunk, n_chunks, eps, precision)


def dynamic_evaluate(model: LanguageModel, ids: Ids, lr: float = 2e-4, chunk: int = 20, method: str = "rms",
                     stats_ids: Ids | None = None, stats_chunks: int = 100, decay: float = 0.0,
                     eps: float = 1e-5, precision: str = "fp32") -> dict:
    """Dynamic evaluation (Krause et al. 2018): read ``ids`` in order, one row, ``chunk`` tokens at
    a time with the state carried; score each chunk first, then take one gradient step on it, so
    the model adapts to the text it has read (``Adapter``, on a private copy of ``model``: the
    model, and any checkpoint on disk, are left unchanged).

    ``method="rms"``: the step is ``lr * g / sqrt(MS)``, with MS the mean squared gradient of
    ``stats_chunks`` chunks of ``stats_ids`` (the training text; measured once, before scoring);
    ``"sgd"``: ``lr * g``. ``decay`` pulls the weights back toward the original ones each step.
    Returns the same figures as ``evaluate`` (loss, ppl, bpc, tokens) for the adapted reading.
    ``precision`` bf16: forward passes and losses under bfloat16 autocast, the weights, gradients
    and steps float32 (a step of 2e-4 would vanish in bfloat16 weights).
    """
    if method not in ("rms", "sgd"):
        raise RnnlabError(f"unknown dynamic-evaluation method {method!r}; use rms or sgd")
    if method == "rms" and stats_ids is None:
        raise RnnlabError("rms dynamic evaluation needs the training text (stats_ids) for its gradient scale")
    if len(ids) < 2:
        raise RnnlabError("evaluation needs at least 2 tokens")
    scale = rms_scale(model, stats_ids, chunk, stats_chunks, eps, precision) if method == "rms" else None
    adapter = Adapter(model, lr, chunk, scale, decay, precision)
    total, count = adapter.read(to_device(ids, adapter.model.device))
    loss = total / count
    return {"loss": loss, "ppl": perplexity(loss), "bpc": bits_per_token(loss), "tokens": count}


def _rms_scale(m: LanguageModel, params: list, stats_ids: Ids, chunk: int, n_chunks: int, eps: float,
               precision: str = "fp32") -> list:
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
        with autocast(m.device, precision):
            logits, state = m(x, tuple(s.detach() for s in state))
            loss = lm_loss(logits, y)
        for acc, g in zip(ms, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                acc += g * g / n_chunks
    return [a.sqrt() + eps for a in ms]
