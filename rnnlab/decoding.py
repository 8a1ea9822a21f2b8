"""Decoding: one token loop for every caller — the CLI's ``generate``, the library's
``generate_text``, ``/v1/generate`` and ``/v1/generate/stream``.

The model warms up on the prompt once, then steps one token at a time with the state carried
(``model.step``). Each step's logits pass through a chain of *logit filters* (whisper's
``LogitFilter`` idea): suppressed tokens (``<unk>``: never emitted anywhere), temperature, top-k,
top-p; then the next token is the argmax (greedy: ``temperature == 0`` or ``top_k == 1``, the
book's ``predict_ch8``) or a draw from the softmax. A model that has a fused greedy kernel
(``model.greedy_tokens``, the C++ loop) runs a whole greedy continuation in one call.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

from .config import GenerateConfig
from .data.tokenizer import Prompt, Tokenizer
from .models import LanguageModel


class LogitFilter:
    """Maps logits (N, V) to logits (N, V); -inf removes a token."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SuppressTokens(LogitFilter):
    def __init__(self, ids: Sequence[int]):
        self.ids = list(ids)

    def __call__(self, logits):
        if not self.ids:
            return logits
        return logits.index_fill(-1, torch.tensor(self.ids, device=logits.device), float("-inf"))


class Temperature(LogitFilter):
    """Scales by 1/T after subtracting each row's maximum, so that a tiny T (1e-300) gives the
    argmax (ties shared) instead of inf - inf = nan."""

    def __init__(self, temperature: float):
        self.t = temperature

    def __call__(self, logits):
        logits = logits.float()
        top = logits.max(dim=-1, keepdim=True).values  # (N, 1); a row of -inf only is left alone
        t = max(self.t, torch.finfo(logits.dtype).tiny)  # 1e-300 is 0 in float32: 0 / 0 would be nan
        return (logits - top.clamp(min=torch.finfo(logits.dtype).min)) / t


class TopK(LogitFilter):
    def __init__(self, k: int):
        self.k = k

    def __call__(self, logits):
        if not self.k or self.k >= logits.shape[-1]:
            return logits
        kth = torch.topk(logits, self.k, dim=-1).values[..., -1:]  # (N, 1)
        return logits.masked_fill(logits < kth, float("-inf"))


class TopP(LogitFilter):
    """Keeps the smallest set of most likely tokens whose probability reaches ``p`` (never empty:
    the most likely token is always kept, however small ``p``)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, logits):
        if self.p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        probs = torch.softmax(sorted_logits.float(), dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= self.p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


def is_greedy(cfg: GenerateConfig) -> bool:
    return cfg.temperature <= 0 or cfg.top_k == 1


def token_picker(cfg: GenerateConfig, suppress: Sequence[int] = (),
                 generator: torch.Generator | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``pick(logits (N, V)) -> ids (N,)``: the filters of ``cfg``, then argmax or a draw."""
    if is_greedy(cfg):
        filters: list[LogitFilter] = [SuppressTokens(suppress)]
    else:
        filters = [SuppressTokens(suppress), Temperature(cfg.temperature), TopK(cfg.top_k), TopP(cfg.top_p)]

    def pick(logits: torch.Tensor) -> torch.Tensor:
        for f in filters:
            logits = f(logits)
        if is_greedy(cfg):
            return logits.argmax(dim=-1)
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)

    return pick


@torch.inference_mode()
def decode(model: LanguageModel, prompt_ids: Sequence[int], cfg: GenerateConfig,
           generator: torch.Generator | None = None, suppress: Sequence[int] = ()) -> Iterator[torch.Tensor]:
    """Yield ``cfg.length`` steps of ``cfg.num_samples`` tokens each (ids (N,)) continuing ``prompt_ids``.

    The prompt is run through the model once (warm-up); each new token then costs one ``step``
    with the state carried. The model is put in eval mode while the iterator runs.
    """
    if not prompt_ids:
        raise ValueError("decode needs prompt ids (Tokenizer.encode_prompt gives the start token for an empty prompt)")
    was_training = model.training
    model.eval()
    try:
        device, n = model.device, cfg.num_samples
        prompt = torch.tensor(list(prompt_ids), dtype=torch.long, device=device).expand(n, -1)  # (N, P)
        logits, state = model(prompt, model.begin_state(n, device))  # (N, P, V)
        last = logits[:, -1]  # (N, V)
        pick = token_picker(cfg, suppress, generator)
        for t in range(cfg.length):
            tok = pick(last)  # (N,)
            yield tok
            if t + 1 < cfg.length:
                last, state = model.step(tok, state)  # (N, V)
    finally:
        model.train(was_training)


@torch.inference_mode()
def generate_ids(model: LanguageModel, prompt_ids: Sequence[int], cfg: GenerateConfig,
                 generator: torch.Generator | None = None, suppress: Sequence[int] = ()) -> torch.Tensor:
    """The generated ids only, (num_samples, length): ``decode`` collected, or for greedy decoding
    the model's fused greedy kernel where it has one (the same tokens, one call)."""
    n = cfg.num_samples
    if is_greedy(cfg) and cfg.length > 0:
        was_training = model.training
        model.eval()
        try:
            device = model.device
            prompt = torch.tensor(list(prompt_ids), dtype=torch.long, device=device).expand(n, -1)  # (N, P)
            logits, state = model(prompt, model.begin_state(n, device))  # (N, P, V)
            banned = torch.tensor(list(suppress), dtype=torch.long)
            ids = model.greedy_tokens(logits[:, -1], state, cfg.length, banned)
        finally:
            model.train(was_training)
        if ids is not None:
            return ids
    steps = list(decode(model, prompt_ids, cfg, generator, suppress))
    if not steps:
        return torch.empty(n, 0, dtype=torch.long, device=model.device)
    return torch.stack(steps, dim=1)  # (N, length)


def generate_text(model: LanguageModel, tokenizer: Tokenizer, prompt: str | Prompt, cfg: GenerateConfig,
                  generator: torch.Generator | None = None, warn: Callable[[str], None] | None = None) -> list[str]:
    """``cfg.num_samples`` continuations of ``prompt``, each starting with the prompt itself.
    ``<unk>`` is never generated; prompt tokens the vocabulary lacks read as ``<unk>`` (``warn``)
    unless ``cfg.strict``."""
    cfg.validate()
    p = prompt if isinstance(prompt, Prompt) else tokenizer.encode_prompt(prompt, cfg.strict, warn)
    ids = generate_ids(model, p.ids, cfg, generator, tokenizer.suppressed_ids())
    return [tokenizer.continue_text(p, row.tolist()) for row in ids]


def generate(model: LanguageModel, tokenizer: Tokenizer, prompt: str, length: int = 100, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None) -> str:
    """One continuation of ``prompt`` (greedy by default), as text."""
    cfg = GenerateConfig(length=length, temperature=temperature, top_k=top_k, top_p=top_p)
    return generate_text(model, tokenizer, prompt, cfg, generator)[0]
