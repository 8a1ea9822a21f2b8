import random

import pytest
import torch

from rnnlab.data.batching import min_tokens_needed, num_batches, random_batches, sequential_batches

B, T = 4, 5


def stream(n=200):
    return torch.arange(n)  # id == position: every check can read positions straight off the ids


@pytest.mark.parametrize("fn", [sequential_batches, random_batches])
def test_targets_are_inputs_shifted_by_one_and_nothing_reads_past_the_end(fn):
    ids = stream(137)
    for seed in range(20):
        batches = list(fn(ids, B, T, random.Random(seed)))
        assert batches
        for x, y in batches:
            assert x.shape == y.shape == (B, T) and x.dtype == torch.long
            assert torch.equal(y, x + 1)
            assert int(y.max()) < len(ids)


def test_sequential_rows_continue_across_minibatches():
    ids = stream(300)
    for seed in range(10):
        batches = list(sequential_batches(ids, B, T, random.Random(seed)))
        assert len(batches) >= 2
        for (x0, _), (x1, _) in zip(batches, batches[1:]):
            assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # row j of minibatch i continues row j of i-1
        # rows are contiguous slices laid side by side: row j+1 starts where row j ends
        row = torch.cat([x for x, _ in batches], dim=1)  # (B, n*T)
        assert torch.all(row[:, 1:] - row[:, :-1] == 1)


def test_sequential_offset_varies_and_stays_within_num_steps():
    offsets = {int(next(sequential_batches(stream(), B, T, random.Random(s)))[0][0, 0]) for s in range(50)}
    assert offsets <= set(range(T + 1)) and len(offsets) > 2


def test_random_windows_are_in_range_aligned_and_distinct():
    ids = stream(203)
    for seed in range(20):
        batches = list(random_batches(ids, B, T, random.Random(seed)))
        starts = torch.cat([x[:, 0] for x, _ in batches])
        offset = int(starts.min()) % T
        assert offset < T
        assert torch.all((starts - offset) % T == 0)  # windows tile the stream from the offset
        assert len(set(starts.tolist())) == len(starts)  # each window at most once per epoch
        for x, _ in batches:
            assert torch.all(x[:, 1:] - x[:, :-1] == 1)  # a window is contiguous


def test_random_sampling_shuffles_windows():
    ids = stream(1000)
    firsts = [tuple(next(random_batches(ids, B, T, random.Random(s)))[0][:, 0].tolist()) for s in range(5)]
    assert len(set(firsts)) == 5
    x, _ = next(random_batches(ids, B, T, random.Random(0)))
    assert not torch.all(x[1:, 0] - x[:-1, 0] == x[1, 0] - x[0, 0])  # rows are not evenly spaced


def test_same_seed_same_batches():
    ids = stream()
    for fn in (sequential_batches, random_batches):
        a = [x for x, _ in fn(ids, B, T, random.Random(7))]
        b = [x for x, _ in fn(ids, B, T, random.Random(7))]
        assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("fn", [sequential_batches, random_batches])
def test_minimum_length_always_yields_a_batch(fn):
    n = min_tokens_needed(B, T)
    for seed in range(30):
        assert len(list(fn(stream(n), B, T, random.Random(seed)))) >= 1


def test_num_batches_matches_iterators():
    ids = stream(250)
    for seed in range(10):
        rng = random.Random(seed)
        state = rng.getstate()
        got = len(list(sequential_batches(ids, B, T, rng)))
        rng.setstate(state)
        off = rng.randint(0, T)
        assert num_batches(len(ids), B, T, "sequential", off) == got


def test_start_skips_minibatches():
    ids = stream()
    full = list(sequential_batches(ids, B, T, random.Random(3)))
    tail = list(sequential_batches(ids, B, T, random.Random(3), start=2))
    assert len(tail) == len(full) - 2 and torch.equal(tail[0][0], full[2][0])
