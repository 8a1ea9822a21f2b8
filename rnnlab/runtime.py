"""Device selection, seeding and the CPU allocator setting: one function each, used by every entry point."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import random

import numpy as np
import torch

from .errors import UsageError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as asked."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: rnnlab runs on cpu, cuda or mps; use one of those (or auto)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s); pick a lower index")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: MPS is not available on this machine; use --device cpu or auto")
    return dev


def use_threads(requested: int = 0, small_steps: bool = False) -> str | None:
    """Set torch's intra-op threads for a command (``--threads``): ``requested`` when given (> 0);
    else one for work done in one-token steps (suggest, serve, eval --keyboard, one generated
    sample), whose small matrices gain nothing from more threads and lose a lot on a busy machine
    (``eval --keyboard`` took 379 s with torch's default threads and 10 s with one, same figures);
    else torch's default. Returns what was chosen, for the command to say, when it chose."""
    if requested:
        torch.set_num_threads(requested)
        return None
    if small_steps:
        torch.set_num_threads(1)
        return "1 torch thread (the work is one-token steps; --threads N to change)"
    return None


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux: MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes: int, what: str, fix: str = "lower --hidden-size, --num-layers or --embedding-dim") -> None:
    """Refuse before allocating ``nbytes`` that the machine does not have."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise UsageError(f"{what} needs {nbytes / 2**30:,.1f} GiB but this machine has {free / 2**30:,.1f} GiB "
                         f"available; {fix}")


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_kept = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of handing them back to the OS.

    Training on the CPU allocates and frees the same few-megabyte buffers every minibatch. By
    default glibc serves blocks that large with ``mmap`` and unmaps them on ``free``, so every
    minibatch pays its page faults again: measured ~1,000 faults and ~2 ms of system time per
    minibatch of a 256-hidden GRU (B=32, T=35), ~50 with this setting. Process-wide; freed memory
    stays in the process (its peak resident size is kept). Idempotent; ``False`` off glibc.
    """
    global _kept
    if _kept:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # serve blocks up to 32 MiB (glibc's largest allowed threshold) from the heap; trim rarely
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _kept


def gemm_rate(n: int = 1024, reps: int = 3) -> float:
    """GFLOP/s of an n^3 float32 matrix product on the CPU (the best of ``reps``): how fast this
    machine is next to another, for rules measured elsewhere (about 50 ms)."""
    import time

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9
