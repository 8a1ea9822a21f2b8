"""The training speeds this machine measured, remembered, so the same command settles the same model.

A cloud machine's speed wanders by a fifth over tens of seconds (measured: the same LSTM step at
34-53 k tokens/s in one idle minute), and a size decided from a two-second measurement flips
between neighbouring widths whenever a budget sits near a boundary. So the first measurement of a
candidate on this machine is kept (``speed.json`` in the user's cache directory, or the file
``RNNLAB_SPEED_FILE`` names) and reused by later runs of any budget; the plan's log line says which
rates were remembered and from when. ``rnnlab train --remeasure`` measures again and replaces them;
entries older than ``MAX_AGE_DAYS`` are measured again by themselves.

A key names everything the rate depends on: the machine (CPU model, cores, torch version and
threads), the device, the candidate's architecture and vocabulary, rows per step, sequence length,
optimiser and precision. The file is written atomically under a lock, so concurrent runs cannot
corrupt it; an unreadable file is set aside (``speed.json.bad``) and measured afresh.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import time
from pathlib import Path

import torch

from .config import TrainConfig
from .models import ModelConfig

SPEED_FILE_ENV = "RNNLAB_SPEED_FILE"
MAX_AGE_DAYS = 30
_IGNORED = ("dropout", "input_dropout", "locked_dropout", "weight_drop", "seed")  # do not change the step's speed


def speed_file() -> Path:
    if os.environ.get(SPEED_FILE_ENV):
        return Path(os.environ[SPEED_FILE_ENV])
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("rnnlab")) / "speed.json"


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def key(cand: ModelConfig, tcfg: TrainConfig, device: torch.device, rows: int, precision: str) -> str:
    """Everything a measured training rate depends on, as one string."""
    arch = {k: v for k, v in dataclasses.asdict(cand).items() if k not in _IGNORED}
    return json.dumps({"cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "device": _device_name(device), "model": arch,
                       "rows": rows, "T": tcfg.num_steps, "optimizer": tcfg.optimizer,
                       "precision": precision}, sort_keys=True)


class RateBook:
    """Remembered rates: ``get`` (tokens/s and when it was measured, or None) and ``put``.
    ``remeasure``: the run measures again (and remembers the new rates) instead of reading any;
    ``remembered``: when the oldest rate this run took from the book was measured (epoch seconds)."""

    def __init__(self, path: Path | None = None, clock=time.time, remeasure: bool = False):
        self.path = path or speed_file()
        self.clock = clock
        self.remeasure = remeasure
        self.remembered: float | None = None

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            try:  # a damaged file is kept for a look, never trusted
                self.path.replace(self.path.with_name(self.path.name + ".bad"))
            except OSError:
                pass
            return {}

    def get(self, k: str) -> tuple[float, float] | None:
        entry = self._read().get(k)
        try:
            rate, at = float(entry["tokens_per_s"]), float(entry["at"])
        except (TypeError, KeyError, ValueError):
            return None
        if not rate > 0 or self.clock() - at > MAX_AGE_DAYS * 86400:
            return None
        return rate, at

    def put(self, entries: dict[str, float]) -> None:
        """Remember ``{key: tokens/s}`` (best effort: a cache that cannot be written only costs the next
        run a measurement)."""
        from filelock import FileLock, Timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock", timeout=10):
                data = self._read()
                now = self.clock()
                data.update({k: {"tokens_per_s": round(v, 1), "at": now} for k, v in entries.items()})
                tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
                tmp.replace(self.path)
        except (OSError, Timeout):
            pass


__all__ = ["MAX_AGE_DAYS", "RateBook", "SPEED_FILE_ENV", "key", "speed_file"]
