"""bfloat16 where the machine has it, chosen by measurement.

``--precision`` (``config.Precision``) is ``fp32``, ``bf16`` or ``auto``:

* ``bf16`` for training and sequence work (``eval``, dynamic evaluation) is ``torch.autocast``
  around the forward pass and the loss: the products run in bfloat16, while the weights, their
  gradients, the optimizer state and the loss stay float32, and checkpoints are always float32
  (a bf16-trained model loads and runs anywhere). For one-token work (generation, suggestions,
  the server) it is a bfloat16 copy of the weights (``for_inference``): a cast per step would
  cost as much as the step's product.
* ``auto`` is decided by measuring the work itself, never assumed: a machine without bfloat16
  instructions runs autocast slower than float32 (torch's own documentation warns), one with
  AVX512-BF16 or AMX faster. Training measures its real step (``speed.step_rates``) at both
  precisions and takes bf16 only if it is at least ``MARGIN`` times faster (``choose``); a CPU
  that has no bfloat16 instructions at all is not measured (fp32, at no cost). CUDA: bf16 where
  ``torch.cuda.is_bf16_supported()``.

Parts of a model that stay float32 under bf16 (a C++ loop, a scan, a torch layer without a
bfloat16 kernel) are the cell's to say (``Cell.bf16_note``, collected by ``models.precision_notes``);
the run's plan logs them once.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .config import InferenceConfig
from .errors import UsageError

MARGIN = 1.10  # bf16 must measure at least this many times float32's rate to be chosen
# `rnnlab serve`'s default: the fastest of fp32, bf16 (or auto) and int8 whose keystroke savings stay within 0.005
# of float32's (benchmarks/precision.py --inference; README, Precision). Measured: float32 answered suggestions in
# 5.3 ms, int8 in 9.0 ms, the bfloat16 copy in 25 ms (LSTM 128, AVX512-BF16 without AMX), all within 0.002.
SERVING = "fp32"


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bfloat16 instructions (x86 AVX512-BF16 or AMX-BF16, Arm BF16); None
    where the system does not say (no ``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def unsupported(device: torch.device) -> str:
    """Why bfloat16 cannot run on ``device`` ('' when it can)."""
    if device.type == "cpu":
        return ""
    if device.type == "cuda":
        return "" if torch.cuda.is_bf16_supported() else f"{device} has no bfloat16 support"
    return f"bfloat16 runs on the CPU and on CUDA here, not on {device.type}"


def check(precision: str, device: torch.device) -> None:
    """Refuse ``bf16`` on a device that cannot run it (a ``UsageError`` naming the fix)."""
    why = unsupported(device) if precision == "bf16" else ""
    if why:
        raise UsageError(f"--precision bf16: {why}; use --precision fp32 (or auto)")


def autocast(device: torch.device | str, precision: str):
    """The context the forward pass and the loss run in: bfloat16 autocast for ``bf16``, nothing
    for ``fp32``. ``auto`` must have been decided before (``plan.settle`` does it for training)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise UsageError(f"precision {precision!r} is not decided; settle the run first (rnnlab.plan.settle), "
                     f"or give fp32 or bf16")


def choose(fp32_rate: float, bf16_rate: float | None, margin: float = MARGIN) -> str:
    """``bf16`` if its measured rate is at least ``margin`` times float32's, else ``fp32``."""
    if bf16_rate is None or not fp32_rate > 0:
        return "fp32"
    return "bf16" if bf16_rate >= margin * fp32_rate else "fp32"


@dataclass
class Choice:
    """What ``auto`` decided, on which measurement, for the log and the checkpoint."""

    precision: str
    fp32: float = 0.0  # measured rates (0: not measured)
    bf16: float = 0.0
    what: str = ""  # what was measured, e.g. "the training step at H=256"
    unit: str = "tokens/s"
    why: str = ""  # why nothing was measured
    seconds: float = 0.0
    margin: float = MARGIN

    def describe(self) -> str:
        if not self.bf16:
            return f"precision {self.precision} (auto: {self.why or 'not measured'})"
        ratio = self.bf16 / self.fp32 if self.fp32 else float("inf")
        return (f"precision {self.precision} (auto: {self.what}: float32 {_k(self.fp32)}, bfloat16 {_k(self.bf16)} "
                f"{self.unit}, {ratio:.2f}x; bf16 needs {self.margin:.2f}x; {self.seconds:.1f} s)")

    def to_dict(self) -> dict:
        return {"precision": self.precision, "fp32": round(self.fp32, 1), "bf16": round(self.bf16, 1),
                "what": self.what, "unit": self.unit, "why": self.why, "seconds": round(self.seconds, 3),
                "margin": self.margin}


def _k(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.1f}"


def emulated(device: torch.device) -> bool:
    """Whether bfloat16 on ``device`` is emulated: a CPU known to lack bfloat16 instructions."""
    return device.type == "cpu" and cpu_has_bf16() is False


def not_worth_measuring(device: torch.device) -> str:
    """Why ``auto`` picks fp32 on ``device`` without measuring ('' when it should measure)."""
    why = unsupported(device)
    if why:
        return why
    if emulated(device):
        return ("this CPU has no bfloat16 instructions (AVX512-BF16, AMX, Arm BF16), where autocast is slower; "
                "not measured")
    return ""


def decide(device: torch.device, measure: Callable[[], tuple[float, float]], what: str, unit: str = "tokens/s",
           margin: float = MARGIN, why: str | None = None) -> Choice:
    """Decide ``auto`` on ``device``: ``measure()`` times the work in float32 and bfloat16 (their
    rates, best measured taking turns) and bf16 wins only by ``margin``. A device without
    bfloat16 is not measured (``why``: the reason not to measure, when the caller knows it)."""
    t0 = time.perf_counter()
    why = not_worth_measuring(device) if why is None else why
    if why:
        return Choice("fp32", why=why, margin=margin)
    fp32, bf16 = measure()
    return Choice(choose(fp32, bf16, margin), fp32, bf16, what, unit, seconds=time.perf_counter() - t0, margin=margin)


# -- one-token work: generation, suggestions, the server ------------------------------------------
def for_inference(model, precision: str):
    """The model one-token work runs: itself for fp32, a bfloat16 copy of it for bf16 (the model
    is not changed)."""
    if precision == "fp32":
        return model
    if precision == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16)
    raise UsageError(f"precision {precision!r} is not decided; give fp32 or bf16")


def token_rate(model, rows: int = 1, steps: int = 32) -> float:
    """One-token steps per second of ``model`` for ``rows`` rows over a burst of ``steps`` steps."""
    device = next(model.parameters()).device
    ids = torch.zeros(rows, dtype=torch.long, device=device)
    state = model.begin_state(rows, device)
    t0 = time.perf_counter()
    for _ in range(steps):
        logits, state = model.step(ids, state)
    logits.float().sum().item()
    return rows * steps / (time.perf_counter() - t0)


def inference_choice(model, device: torch.device, rounds: int = 5, margin: float = MARGIN) -> Choice:
    """``auto`` for one-token work: the model's own one-token step, float32 against its bfloat16
    copy, in bursts taking turns (the median of ``rounds`` each, after a warm-up burst)."""
    def measure() -> tuple[float, float]:
        copies = {"fp32": model, "bf16": for_inference(model, "bf16")}
        rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for r in range(rounds + 1):
            for p, m in copies.items():
                rate = token_rate(m)
                if r:
                    rates[p].append(rate)
        return statistics.median(rates["fp32"]), statistics.median(rates["bf16"])

    return decide(device, measure, "one-token steps", unit="tokens/s", margin=margin)


# -- sequence work without training: eval ------------------------------------------------------
def forward_rate(model, rows: int, steps: int, precision: str) -> float:
    """Tokens per second of one forward pass over ``rows`` x ``steps`` tokens in ``precision``
    (autocast for bf16), without gradients."""
    device = next(model.parameters()).device
    ids = torch.zeros(rows, steps, dtype=torch.long, device=device)
    with torch.no_grad(), autocast(device, precision):
        t0 = time.perf_counter()
        logits, _ = model(ids, model.begin_state(rows, device))
        logits.float().sum().item()
    return rows * steps / (time.perf_counter() - t0)


def sequence_choice(model, device: torch.device, rows: int = 32, steps: int = 35, rounds: int = 5,
                    margin: float = MARGIN) -> Choice:
    """``auto`` for scoring a text (``eval``): the model's forward pass over ``rows`` x ``steps``
    tokens, float32 against bfloat16 autocast, taking turns (medians of ``rounds``, after a warm-up)."""
    def measure() -> tuple[float, float]:
        rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for r in range(rounds + 1):
            for p in rates:
                rate = forward_rate(model, rows, steps, p)
                if r:
                    rates[p].append(rate)
        return statistics.median(rates["fp32"]), statistics.median(rates["bf16"])

    return decide(device, measure, f"the forward pass over {rows} x {steps} tokens", margin=margin)


def sequence_precision(model, precision: str, rows: int, steps: int, log=None, int8: bool = False) -> str:
    """The precision a text is scored in (``eval``): ``auto`` decided by ``sequence_choice`` (said
    through ``log``); an int8 copy runs as it is (fp32 here), and refuses bf16."""
    if int8:
        InferenceConfig(int8=True, precision=precision).validate()  # refuses bf16
        return "fp32"
    device = next(model.parameters()).device
    check(precision, device)
    if precision != "auto":
        return precision
    choice = sequence_choice(model, device, rows, steps)
    if log is not None:
        log(f"rnnlab: {choice.describe()}")
    return choice.precision


__all__ = ["Choice", "MARGIN", "SERVING", "autocast", "check", "choose", "cpu_has_bf16", "decide", "emulated",
           "for_inference", "forward_rate", "inference_choice", "not_worth_measuring", "sequence_choice",
           "sequence_precision", "token_rate", "unsupported"]
