"""The trainer's state file beside a checkpoint's weights, for an exact ``--resume``.

    DIR/trainer_state.safetensors   tensors: RNG states, the carried hidden state, the optimizer's
                                    tensors, the best weights kept so far
    DIR/trainer_state.json          the rest: position, history, schedule, optimizer's numbers

``TrainerState`` is what a ``Trainer`` hands over and takes back (``Trainer.state_dict``); this
module turns it into (tensors, JSON) and back, and reads the pair written by
``checkpoint.save_checkpoint``, checked (keys, readability, the same save as the weights).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as st_load_file

from .checkpoint import SNAPSHOTS, STATE_JSON, STATE_TENSORS, save_id_of
from .errors import RnnlabError
from .io import check_input_file, read_json

KEYS = ("epoch", "step", "elapsed", "best_val", "history", "rng_batching", "epoch_rng_state", "batch_in_epoch",
        "partial", "carry_len", "optimizer")  # a file without one of them is damaged


def _rng_json(state: tuple | None) -> list | None:  # random.Random.getstate() -> JSON
    return None if state is None else [state[0], list(state[1]), state[2]]


def _rng_tuple(state: list | None) -> tuple | None:
    return None if state is None else (state[0], tuple(state[1]), state[2])


@dataclass
class TrainerState:
    """Everything a trainer needs to continue exactly. ``carry``: the hidden state carried into
    the next minibatch, all ``B`` rows; ``rank_rngs``: every rank's torch RNG state (DDP)."""

    epoch: int
    step: int
    elapsed: float
    history: list[dict]
    batch_rng: tuple  # random.Random state of the batching
    epoch_rng: tuple | None  # the batching RNG at the start of an unfinished epoch
    batch_in_epoch: int
    partial: list  # loss sum, tokens, compute seconds of the unfinished epoch
    optimizer: dict  # torch optimizer state_dict
    schedule: dict  # Schedule.state_dict()
    next_eval: float
    setup_seconds: float
    stop_reason: str
    carry: tuple[torch.Tensor, ...] | None = None
    best_weights: dict[str, torch.Tensor] | None = None
    rank_rngs: list[torch.Tensor] | None = None
    torch_rng: torch.Tensor = field(default_factory=torch.get_rng_state)
    cuda_rngs: list[torch.Tensor] = field(default_factory=lambda: (
        list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []))

    def to_files(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON-able dict) for ``save_checkpoint(trainer_state=...)``."""
        tensors: dict[str, torch.Tensor] = {"rng.torch": self.torch_rng}
        for r, s in enumerate(self.rank_rngs or []):
            tensors[f"rng.torch.rank{r}"] = s
        for i, s in enumerate(self.cuda_rngs):
            tensors[f"rng.cuda.{i}"] = s
        for i, s in enumerate(self.carry or ()):
            tensors[f"carry.{i}"] = s
        for name, t in (self.best_weights or {}).items():
            tensors[f"best.{name}"] = t
        opt_json: dict = {"param_groups": self.optimizer["param_groups"], "state": {}}
        for pid, st in self.optimizer["state"].items():
            entry = {}
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optim.{pid}.{k}"] = v
                    entry[k] = "tensor"
                else:
                    entry[k] = v
            opt_json["state"][str(pid)] = entry
        meta = {
            "epoch": self.epoch, "step": self.step, "elapsed": self.elapsed, "history": self.history,
            "rng_batching": _rng_json(self.batch_rng), "epoch_rng_state": _rng_json(self.epoch_rng),
            "batch_in_epoch": self.batch_in_epoch, "partial": self.partial,
            "carry_len": 0 if self.carry is None else len(self.carry), "optimizer": opt_json,
            **self.schedule,
            "next_eval": self.next_eval if math.isfinite(self.next_eval) else None,
            "setup_seconds": self.setup_seconds, "stop_reason": self.stop_reason,
        }
        return tensors, meta

    @classmethod
    def from_files(cls, tensors: dict[str, torch.Tensor], meta: dict, device: torch.device, rank: int = 0,
                   eval_every: float = 0.0) -> "TrainerState":
        """The state ``to_files`` wrote, tensors on ``device``; ``rank``'s own torch RNG (DDP)."""
        n = meta["carry_len"]
        opt = meta["optimizer"]
        state = {int(pid): {k: (tensors[f"optim.{pid}.{k}"] if val == "tensor" else val) for k, val in entry.items()}
                 for pid, entry in opt["state"].items()}
        best = {k[len("best."):]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        own = f"rng.torch.rank{rank}"
        nxt = meta.get("next_eval")
        return cls(
            epoch=meta["epoch"], step=meta["step"], elapsed=meta["elapsed"], history=meta["history"],
            batch_rng=_rng_tuple(meta["rng_batching"]), epoch_rng=_rng_tuple(meta["epoch_rng_state"]),
            batch_in_epoch=meta["batch_in_epoch"], partial=meta["partial"],
            optimizer={"state": state, "param_groups": opt["param_groups"]},
            schedule={k: meta[k] for k in ("best_val", "evals_since_best", "early_stopped", "anneal", "stop_reason")
                      if k in meta},  # all but best_val absent before rnnlab 0.2
            next_eval=float(nxt) if nxt is not None else (eval_every or float("inf")),
            setup_seconds=float(meta.get("setup_seconds", 0.0)), stop_reason=str(meta.get("stop_reason", "")),
            carry=tuple(tensors[f"carry.{i}"].to(device) for i in range(n)) if n else None,
            best_weights=best or None,
            torch_rng=tensors[own if own in tensors else "rng.torch"].cpu(),
            cuda_rngs=[tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))])

    def restore_rngs(self) -> None:
        """Set torch's RNG states (the CUDA ones when the same number of GPUs is there) to the saved ones."""
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rngs and torch.cuda.is_available() and len(self.cuda_rngs) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in self.cuda_rngs])


def load_trainer_state(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The trainer state saved beside a checkpoint's weights (for ``--resume``), as (tensors, JSON)."""
    d = Path(ckpt_dir)
    if not (d / STATE_JSON).is_file() or not (d / STATE_TENSORS).is_file():
        raise RnnlabError(f"{d}: no trainer state to resume from; it was not written by `rnnlab train` "
                          f"(start a new run with a fresh --out)")
    meta = read_json(d / STATE_JSON, "trainer state")
    missing = [k for k in KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise RnnlabError(f"{d / STATE_JSON}: the trainer state lacks {', '.join(missing)}; it is damaged — resume "
                          f"from a snapshot in {d / SNAPSHOTS} or start a new run")
    check_input_file(d / STATE_TENSORS, "trainer state")
    try:
        tensors = st_load_file(str(d / STATE_TENSORS))  # tensor by tensor from a memory map: no copy of the file
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise RnnlabError(f"{d / STATE_TENSORS}: cannot read the trainer state ({e}); the file is corrupt") from None
    if meta.get("save_id") != save_id_of(d)[0]:
        raise RnnlabError(f"{d}: trainer state and weights come from different saves; "
                          f"resume from a snapshot in {d / SNAPSHOTS}")
    return tensors, meta


__all__ = ["KEYS", "TrainerState", "load_trainer_state"]
