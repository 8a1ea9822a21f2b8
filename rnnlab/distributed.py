"""Data-parallel training on PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node N -m rnnlab train ...`` starts N processes with ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. ``setup``
reads them, joins the process group (gloo on the CPU, nccl on CUDA, one GPU per local rank) and
returns a ``DistContext``; a plain ``rnnlab train`` gets the single-process context ``LOCAL``.

How the work is shared is decided elsewhere (``rnnlab.data.batching``: rows of the global batch;
``rnnlab.training.Trainer``: gradient averaging and metric reduction). This module only knows
processes: who am I, how many are we, reduce / gather / wait.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import UsageError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this context initialised the process group, so ``cleanup`` ends it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, plots and checkpoints."""
        return self.rank == 0


LOCAL = DistContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_context() -> DistContext:
    """The context torchrun describes in the environment (``LOCAL`` without torchrun)."""
    if not launched_by_torchrun():
        return LOCAL
    try:
        return DistContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                           int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise UsageError("WORLD_SIZE is set but RANK is missing or not a number; launch with torchrun") from None


def device_for(ctx: DistContext, device_name: str = "auto") -> torch.device:
    """One device per process: ``cuda:LOCAL_RANK`` on a GPU node, else the CPU.

    ``--device cuda`` under torchrun means "this process's GPU"; an explicit ``cuda:N`` is refused
    because every rank would pick the same GPU.
    """
    from .runtime import select_device

    if not ctx.enabled:
        return select_device(device_name)
    if device_name not in (None, "", "auto", "cpu", "cuda"):
        raise UsageError(f"--device {device_name} under torchrun: use auto, cpu or cuda (each process takes "
                         f"cuda:LOCAL_RANK itself)")
    want_cuda = device_name == "cuda" or (device_name in (None, "", "auto") and torch.cuda.is_available())
    if not want_cuda:
        return torch.device("cpu")
    select_device("cuda")  # a clear error when CUDA is missing
    if ctx.local_rank >= torch.cuda.device_count():
        raise UsageError(f"LOCAL_RANK {ctx.local_rank} but only {torch.cuda.device_count()} GPU(s) on this node; "
                         f"lower --nproc_per_node")
    return torch.device("cuda", ctx.local_rank)


def setup(device: torch.device, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun describes (no-op without torchrun). gloo for the CPU,
    nccl for CUDA; a group that already exists (e.g. made by the caller) is reused."""
    ctx = env_context()
    if not ctx.enabled:
        return LOCAL
    if dist.is_initialized():
        if dist.get_world_size() != ctx.world_size:
            raise UsageError("a process group of another size is already initialised")
        return ctx
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size,
                            timeout=timedelta(seconds=timeout_s))
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, owns_group=True)


def cleanup(ctx: DistContext) -> None:
    """Wait for every rank, then leave the group (only if ``setup`` created it)."""
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        # free finished DDP wrappers (their reducer holds the group) now rather than during interpreter
        # teardown, where gloo's worker threads can abort the process ("terminate called ...", seen once in CI)
        gc.collect()
        dist.destroy_process_group()


REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def reduce_over_ranks(values: list, ctx: DistContext, device: torch.device, op: str = "sum") -> list:
    """Each of ``values`` (numbers or one-element tensors) reduced over every rank by ``op``
    (``"sum"``, ``"min"`` or ``"max"``), as float64 numbers, in one all-reduce: the same list on
    every rank. In a single process, the values themselves as numbers."""
    if not ctx.enabled:
        return [v.item() if isinstance(v, torch.Tensor) else v for v in values]
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    dist.all_reduce(t, op=REDUCE_OPS[op])
    return t.tolist()


def sum_over_ranks(values: list, ctx: DistContext, device: torch.device, main_only: tuple[int, ...] = ()) -> list:
    """``reduce_over_ranks(values, ..., "sum")``, except that a position in ``main_only`` counts
    rank 0's value alone (its clock, its compute seconds: the same figure on every rank)."""
    if ctx.enabled and not ctx.is_main:
        values = [0.0 if i in main_only else v for i, v in enumerate(values)]
    return reduce_over_ranks(values, ctx, device, "sum")


def all_gather_rows(t: torch.Tensor, ctx: DistContext, dim: int) -> torch.Tensor:
    """Every rank's ``t`` concatenated along ``dim`` in rank order (e.g. states (L, B/W, H) ->
    (L, B, H))."""
    if not ctx.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def all_gather_object(obj, ctx: DistContext) -> list:
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def check_batch(batch_size: int, ctx: DistContext) -> int:
    """Rows per rank: ``--batch-size`` is the global batch, split evenly over the ranks."""
    if batch_size % ctx.world_size:
        raise UsageError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                         f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")
    return batch_size // ctx.world_size


__all__ = ["DistContext", "LOCAL", "all_gather_object", "all_gather_rows", "barrier",
           "check_batch", "cleanup", "device_for", "env_context", "launched_by_torchrun", "reduce_over_ranks", "setup",
           "sum_over_ranks"]


def launch_local(argv: list[str], nproc: int) -> int:
    """``rnnlab train --nproc N ...``: run ``torchrun --standalone --nproc-per-node N -m rnnlab
    train ...`` in this process (torch's own launcher), after the caller has validated the
    settings, so a usage error is one line here instead of a launcher failure report. Returns the
    exit code: 0, or the first failed rank's own code (each rank has printed its one-line error)."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for name in ("torch.distributed.elastic", "torch.distributed.run"):  # the ranks speak for themselves
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    targs = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "rnnlab", *argv])
    try:
        run(targs)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        return next((c for c in codes if c > 0), 1)
    except SignalException as exc:  # SIGINT/SIGTERM to the launcher: the agent has passed it on to the ranks,
        return 128 + int(exc.sigval)  # which saved and stopped; the code says which signal (130, 143)
    return 0


def die_with_launcher() -> None:
    """In a rank: receive SIGTERM when the launching process dies (even by ``kill -9``), so no rank
    trains on as an orphan holding the run's lock (it saves and stops, as on any SIGTERM). Linux only."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
