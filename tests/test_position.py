"""The position inside an epoch and its running sums (``rnnlab.position``), in one process and as
one rank of two would see them (no collective is needed for these)."""
import random

import torch

from rnnlab.distributed import LOCAL, DistContext
from rnnlab.position import EpochPosition, EpochSums

CPU = torch.device("cpu")


def test_sums_add_up_and_count_since_the_last_record():
    sums = EpochSums([1.0, 4, 0.5], CPU)  # continuing a kept epoch: 1 nat over 4 tokens, 0.5 s
    sums.add(torch.tensor(2.0), 8, 0.25)  # a step: mean 2 nats over 8 tokens
    assert sums.since_record() == [16.0, 8, 0.25]
    sums.add(torch.tensor(0.5), 8, 0.25)
    assert sums.since_record() == [4.0, 8, 0.25] and sums.since_record() == [0.0, 0, 0.0]
    assert sums.total(LOCAL) == [21.0, 20, 1.0] and isinstance(sums.total(LOCAL)[1], int)
    assert sums.loss.dtype == torch.float64


def test_an_epoch_begins_fresh_or_replays_the_unfinished_one():
    rng = random.Random(3)
    pos = EpochPosition()
    pos.begin(rng)
    start = rng.getstate()
    assert pos.rng_state == start and (pos.batch, pos.carry, pos.partial) == (0, None, [0.0, 0, 0.0])
    first = [rng.random() for _ in range(3)]
    pos.batch = 2
    pos.begin(rng)  # unfinished: the RNG goes back to the epoch's start, the position stays
    assert [rng.random() for _ in range(3)] == first and pos.batch == 2
    pos.finish()
    assert (pos.rng_state, pos.batch, pos.carry, pos.partial) == (None, 0, None, [0.0, 0, 0.0])


def test_the_kept_sums_start_on_rank_0_only_and_each_rank_takes_its_rows():
    carry = (torch.arange(2 * 4 * 3.0).reshape(2, 4, 3),)  # (L, B, H): 4 rows
    pos = EpochPosition(rng_state=None, batch=5, carry=carry, partial=[7.0, 40, 2.0])
    rank0, rank1 = DistContext(0, 2), DistContext(1, 2)
    assert pos.sums(rank0, CPU).since_record() == [0.0, 0, 0.0] and pos.sums(rank0, CPU).tokens == 40
    assert pos.sums(rank1, CPU).tokens == 0 and pos.sums(rank1, CPU).loss.item() == 0.0
    assert torch.equal(pos.rank_carry(rank1, 4)[0], carry[0][:, 2:4])  # (L, B/W, H)
    assert torch.equal(pos.rank_carry(rank0, 4)[0], carry[0][:, 0:2])
    assert pos.rank_carry(LOCAL, 4) is carry


def test_keeping_a_position_keeps_a_sequential_state_only():
    state = (torch.ones(1, 2, 3, requires_grad=True) * 2,)
    pos = EpochPosition()
    pos.keep(state, [3.0, 10, 1.0], LOCAL, sequential=True)
    assert pos.partial == [3.0, 10, 1.0] and torch.equal(pos.carry[0], state[0].detach())
    assert not pos.carry[0].requires_grad and pos.rank_rngs is None  # one process: no RNGs to gather
    pos.keep(state, [3.0, 10, 1.0], LOCAL, sequential=False)
    assert pos.carry is None
