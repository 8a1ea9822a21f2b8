"""Which machine a benchmark ran on: CPU model, cores, its bfloat16/AMX flags, torch and threads, and
the rate of a 2048^3 matrix product (float32, and bfloat16 where it is not emulated), so a reader
knows which machine a row comes from. Every benchmark prints ``describe()`` first.

    python benchmarks/machine.py
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in FLAGS if f in have]
    except OSError:
        pass
    return []


def gemm_gflops(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n^3 product in ``dtype`` on the CPU: the median of ``reps`` after a warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def describe(bf16: bool = True) -> str:
    flags = cpu_flags()
    line = (f"machine: {cpu_model()}, {os.cpu_count()} cores, flags [{' '.join(flags) or 'none of ' + ' '.join(FLAGS)}], "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; 2048^3 GEMM float32 "
            f"{gemm_gflops():.0f} GFLOP/s")
    if bf16:
        line += f", bfloat16 {gemm_gflops(dtype=torch.bfloat16):.0f} GFLOP/s"
    return line


if __name__ == "__main__":
    print(describe())
