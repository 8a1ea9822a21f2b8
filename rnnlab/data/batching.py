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

The book's PyTorch ``train_ch8(use_random_iter=True)`` reuses the sequential iterator and only
resets the state; ``random_batches`` here really draws the windows at random, as the book's text
(and its ``seq_data_iter_random``) describes.
"""
from __future__ import annotations

import random
from typing import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


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


def sequential_batches(ids: torch.Tensor, batch_size: int, num_steps: int,
                       rng: random.Random, start: int = 0) -> Iterator[Batch]:
    """Minibatches by sequential partitioning (see module doc). ``rng`` is consumed now, not
    lazily; ``start`` skips the first minibatches of the epoch (to resume mid-epoch)."""
    offset = rng.randint(0, num_steps)
    row_len = (len(ids) - offset - 1) // batch_size
    xs = ids[offset: offset + batch_size * row_len].view(batch_size, row_len)  # (B, N')
    ys = ids[offset + 1: offset + 1 + batch_size * row_len].view(batch_size, row_len)  # (B, N')
    n = row_len // num_steps

    def gen() -> Iterator[Batch]:
        for i in range(start, n):
            sl = slice(i * num_steps, (i + 1) * num_steps)
            yield xs[:, sl], ys[:, sl]  # (B, T), (B, T)

    return gen()


def random_batches(ids: torch.Tensor, batch_size: int, num_steps: int,
                   rng: random.Random, start: int = 0) -> Iterator[Batch]:
    """Minibatches by random sampling (see module doc). ``rng`` is consumed now."""
    offset = rng.randint(0, num_steps - 1)
    num_windows = (len(ids) - offset - 1) // num_steps
    starts = [offset + k * num_steps for k in range(num_windows)]
    rng.shuffle(starts)
    n = num_windows // batch_size
    steps = torch.arange(num_steps)

    def gen() -> Iterator[Batch]:
        for i in range(start, n):
            s = torch.tensor(starts[i * batch_size: (i + 1) * batch_size])
            idx = s[:, None] + steps[None, :]  # (B, T)
            yield ids[idx], ids[idx + 1]

    return gen()


def epoch_batches(ids: torch.Tensor, batch_size: int, num_steps: int, sampling: str,
                  rng: random.Random, start: int = 0) -> Iterator[Batch]:
    fn = sequential_batches if sampling == "sequential" else random_batches
    return fn(ids, batch_size, num_steps, rng, start=start)
