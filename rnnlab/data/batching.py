r"""Cutting a token stream into minibatches for truncated backpropagation through time.

Letters: ``B`` batch size, ``T`` num_steps, ``N`` tokens in the stream. Every minibatch is a pair
``(X, Y)`` of ``(B, T)`` long tensors with ``Y`` = ``X`` shifted by one token in the stream.
Both strategies start each epoch at a random offset, so successive epochs see different cuts.

Sequential partitioning (state carried across minibatches, detached between them)::

    stream:  o  [ row 0 ........................ | row 1 ........................ | ... ]
             ^ offset in [0, T]
    rows are laid side by side, then cut every T columns:

             minibatch 0    minibatch 1    minibatch 2
    row 0:   t0  .. t2      t3  .. t5      t6  .. t8     <- row j of minibatch i continues
    row 1:   u0  .. u2      u3  .. u5      u6  .. u8        row j of minibatch i-1, so the
     ...                                                    final state of one minibatch is
    row B-1: z0  .. z2      z3  .. z5      z6  .. z8        the initial state of the next

Random sampling (state reset to zeros for every minibatch)::

    stream:  o [ w0 ][ w1 ][ w2 ][ w3 ][ w4 ][ w5 ] ... [ wK ]   (K+1 windows of T tokens)
             ^ offset in [0, T-1]
    windows shuffled:   w4 w0 w5 | w2 wK w1 | ...   -> each minibatch takes B windows;
    neighbouring rows and minibatches are unrelated, so no state can be carried.

Data parallel (``torchrun``, W processes): every rank draws the same epoch plan from the same
seed (same offset, same window order) and takes its share of the rows of each global minibatch,
rows ``[r*B/W, (r+1)*B/W)`` of rank ``r``. In sequential partitioning a rank therefore carries
the state of its own rows; in random sampling it gets its own windows. W ranks with ``B/W`` rows
each see exactly the tokens one process with ``B`` rows sees::

    global minibatch i:  row 0 .. row B/W-1 | row B/W .. row 2B/W-1 | ... | .. row B-1
                         rank 0              rank 1                        rank W-1

The id stream may be a 1-D long tensor (in memory) or a 1-D NumPy array of unsigned ids (a
memory-mapped prepared corpus, ``rnnlab.data.prepared``): minibatches are then read from it one at
a time and converted to long tensors, so the corpus is never loaded whole.

The book's PyTorch ``train_ch8(use_random_iter=True)`` reuses the sequential iterator and only
resets the state; ``random_batches`` here really draws the windows at random, as the book's text
(and its ``seq_data_iter_random``) describes.
"""
from __future__ import annotations

import random
from array import array
from typing import Iterator, Union

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor]
Ids = Union[torch.Tensor, np.ndarray]  # 1-D token ids: a long tensor, or unsigned ints (e.g. a memmap)


def as_long(a: Ids) -> torch.Tensor:
    """A long tensor of the ids in ``a`` (a tensor stays where it is; a NumPy slice is read and copied)."""
    if isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(np.asarray(a).astype(np.int64))


def shuffle_compact(rng: random.Random, x: array) -> None:
    """``rng.shuffle(x)`` (the same permutation, the same RNG use) for a compact ``array``: a
    list of millions of window starts costs ~36 bytes each, an ``array('q')`` 8."""
    randbelow = rng._randbelow  # what random.shuffle draws with
    for i in reversed(range(1, len(x))):
        j = randbelow(i + 1)
        x[i], x[j] = x[j], x[i]


def _rows(batch_size: int, rank: int, world_size: int) -> slice:
    """This rank's rows of a global minibatch of ``batch_size`` rows."""
    per = batch_size // world_size
    return slice(rank * per, (rank + 1) * per)


def min_tokens_needed(batch_size: int, num_steps: int) -> int:
    """The shortest stream that yields at least one minibatch for either strategy, whatever the
    random offset (sequential: ``B*T + T + 1``; random: ``B*T + T``)."""
    return batch_size * num_steps + num_steps + 1


def num_batches(num_tokens: int, batch_size: int, num_steps: int, sampling: str, offset: int) -> int:
    """How many minibatches an epoch holds for a given offset."""
    if sampling == "sequential":
        row = (num_tokens - offset - 1) // batch_size
        return max(row, 0) // num_steps
    windows = (num_tokens - offset - 1) // num_steps
    return max(windows, 0) // batch_size


def sequential_batches(ids: Ids, batch_size: int, num_steps: int, rng: random.Random, start: int = 0,
                       rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
    """Minibatches by sequential partitioning (see module doc). ``rng`` is consumed now, not
    lazily; ``start`` skips the first minibatches of the epoch (to resume mid-epoch). With
    ``world_size`` > 1 each minibatch holds this rank's ``B/W`` rows of the global one."""
    offset = rng.randint(0, num_steps)
    row_len = (len(ids) - offset - 1) // batch_size
    xs = ids[offset: offset + batch_size * row_len].reshape(batch_size, row_len)  # (B, N') view
    ys = ids[offset + 1: offset + 1 + batch_size * row_len].reshape(batch_size, row_len)  # (B, N') view
    mine = _rows(batch_size, rank, world_size)
    xs, ys = xs[mine], ys[mine]  # (B/W, N')
    n = row_len // num_steps

    def gen() -> Iterator[Batch]:
        for i in range(start, n):
            sl = slice(i * num_steps, (i + 1) * num_steps)
            yield as_long(xs[:, sl]), as_long(ys[:, sl])  # (B/W, T), (B/W, T)

    return gen()


def random_batches(ids: Ids, batch_size: int, num_steps: int, rng: random.Random, start: int = 0,
                   rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
    """Minibatches by random sampling (see module doc). ``rng`` is consumed now. With
    ``world_size`` > 1 each minibatch holds this rank's ``B/W`` windows of the global one."""
    offset = rng.randint(0, num_steps - 1)
    num_windows = (len(ids) - offset - 1) // num_steps
    starts = array("q", range(offset, offset + num_windows * num_steps, num_steps))
    shuffle_compact(rng, starts)
    n = num_windows // batch_size
    steps = torch.arange(num_steps)
    mine = _rows(batch_size, rank, world_size)
    on_numpy = not isinstance(ids, torch.Tensor)

    def gen() -> Iterator[Batch]:
        for i in range(start, n):
            s = torch.tensor(starts[i * batch_size: (i + 1) * batch_size][mine].tolist())  # (B/W,)
            idx = s[:, None] + steps[None, :]  # (B/W, T)
            if on_numpy:
                idx = idx.numpy()
            yield as_long(ids[idx]), as_long(ids[idx + 1])

    return gen()


def epoch_batches(ids: Ids, batch_size: int, num_steps: int, sampling: str, rng: random.Random,
                  start: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
    fn = sequential_batches if sampling == "sequential" else random_batches
    return fn(ids, batch_size, num_steps, rng, start=start, rank=rank, world_size=world_size)
