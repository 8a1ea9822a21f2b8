import math
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from rnnlab.config import ModelConfig, RunConfig, TrainConfig
from rnnlab.errors import RnnlabError
from rnnlab.metrics import bits_per_token, perplexity
from rnnlab.models import build_model
from rnnlab.evaluation import evaluate
from rnnlab.training import Trainer, lm_loss


def tiny_ids(n=600, period="abcdefgh"):
    return torch.tensor([i % len(period) + 1 for i in range(n)])  # 1..8, a cycle


def test_perplexity_is_exp_of_mean_nll():
    logits = torch.randn(3, 7, 11)
    y = torch.randint(0, 11, (3, 7))
    loss = lm_loss(logits, y).item()
    logp = torch.log_softmax(logits, -1).gather(-1, y[..., None])
    assert loss == pytest.approx(-logp.mean().item(), rel=1e-6)
    assert perplexity(loss) == pytest.approx(math.exp(-logp.mean().item()), rel=1e-6)
    assert bits_per_token(math.log(2)) == pytest.approx(1.0)
    assert perplexity(1e6) == float("inf")


def test_clipping_bounds_global_norm_and_leaves_small_gradients_alone():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 5)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn_like(p) * 10
    theta = 1.0
    torch.nn.utils.clip_grad_norm_(params, theta)
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    assert total <= theta + 1e-6 and total > 0.99 * theta
    small = [g.clone() * 1e-3 for g in (p.grad for p in params)]
    for p, g in zip(params, small):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, theta)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, small))


def _model(impl="concise", model="rnn", hidden=32, vocab=9):
    torch.manual_seed(0)
    return build_model(ModelConfig(model=model, impl=impl, vocab_size=vocab, hidden_size=hidden))


@pytest.mark.parametrize("impl,sampling", [("concise", "sequential"), ("scratch", "random")])
def test_short_training_lowers_the_loss(impl, sampling):
    cfg = TrainConfig(batch_size=4, num_steps=8, lr=1.0, sampling=sampling, seed=0)
    trainer = Trainer(_model(impl, "gru" if impl == "concise" else "rnn"), cfg, tiny_ids(), run=RunConfig(epochs=15))
    hist = trainer.fit()
    assert len(hist) == 15 and [h["epoch"] for h in hist] == list(range(1, 16))
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    for h in hist:
        assert h["train_ppl"] == pytest.approx(math.exp(h["train_loss"]))
        assert h["tokens_per_sec"] > 0 and h["elapsed_s"] > 0


def test_same_seed_same_run():
    cfg, run = TrainConfig(batch_size=4, num_steps=8, seed=5, sampling="random"), RunConfig(epochs=3)
    a = Trainer(_model(), cfg, tiny_ids(), run=run).fit()
    b = Trainer(_model(), cfg, tiny_ids(), run=run).fit()
    assert [h["train_loss"] for h in a] == [h["train_loss"] for h in b]


def test_sequential_carries_state_and_random_resets_it(monkeypatch):
    """Record the state the model receives at each minibatch."""
    seen = []
    model = _model()
    orig = model.forward

    def spy(tokens, state=None):
        seen.append(state[0].detach().abs().sum().item())
        return orig(tokens, state)

    monkeypatch.setattr(model, "forward", spy)
    Trainer(model, TrainConfig(batch_size=4, num_steps=8, sampling="sequential"), tiny_ids(), run=RunConfig(epochs=1)).fit()
    assert seen[0] == 0 and all(s > 0 for s in seen[1:])
    seen.clear()
    Trainer(model, TrainConfig(batch_size=4, num_steps=8, sampling="random"), tiny_ids(), run=RunConfig(epochs=1)).fit()
    assert len(seen) > 1 and all(s == 0 for s in seen)


def test_too_short_corpus_names_the_minimum():
    with pytest.raises(RnnlabError, match=r"needs at least 289"):
        Trainer(_model(), TrainConfig(batch_size=8, num_steps=32), tiny_ids(100))


def test_nan_loss_stops_with_advice():
    model = _model()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(RnnlabError, match="lower --lr"):
        Trainer(model, TrainConfig(batch_size=4, num_steps=8), tiny_ids(), run=RunConfig(epochs=1)).fit()


def test_evaluate_scores_every_token_in_order_with_carried_state():
    model = _model().eval()
    ids = torch.randint(1, 9, (203,))
    got = evaluate(model, ids, batch_size=1, num_steps=7)
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
        ref = F.cross_entropy(logits[0], ids[1:]).item()
    assert got["tokens"] == 202
    assert got["loss"] == pytest.approx(ref, rel=1e-5)
    assert got["ppl"] == pytest.approx(math.exp(ref), rel=1e-5)
    batched = evaluate(model, ids, batch_size=5, num_steps=7)
    assert batched["tokens"] == 202  # the leftover targets are scored too


_FAULTS_PER_ROUND = """
import resource, sys, torch
from rnnlab.runtime import keep_freed_memory
if sys.argv[1] == "on" and not keep_freed_memory():
    print("unsupported"); sys.exit()
def one_round():  # a minibatch's activations: 80 MiB live at once, then all freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [torch.ones(1 << 20) for _ in range(20)]  # 20 x 4 MiB, above glibc's default mmap threshold
    del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[one_round() for _ in range(3)])
"""


def test_keep_freed_memory_stops_per_minibatch_page_faults():
    """With the allocator setting, the second and third minibatch-sized rounds of allocations reuse
    the first round's pages; glibc's defaults hand them back and the next round faults all 20,480
    pages in again.
    Measured in fresh processes (the suite's own heap history would blur the count)."""
    def rounds(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS_PER_ROUND, mode], capture_output=True, text=True,
                             check=True, timeout=120).stdout.split()
        return out if out == ["unsupported"] else [int(n) for n in out]

    on = rounds("on")
    if on == ["unsupported"]:
        pytest.skip("glibc's mallopt only")
    off = rounds("off")
    assert on[0] > 10_000 and off[0] > 10_000, (on, off)  # the first round faults its pages in either way
    assert sum(on[1:]) < 4 * 1024, on  # then reused (measured: 1,024 in the two rounds together)
    assert off[1] > 10_000, off  # the defaults: all again (later rounds adapt, some runs)
