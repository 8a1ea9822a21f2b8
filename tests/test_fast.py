"""``--impl fast`` computes the same numbers as ``scratch`` and ``concise`` on the same weights.

Every case runs two consecutive minibatches through each implementation — with the state reset
before each (random sampling) or carried and detached (sequential sampling) — and compares the
logits, the returned states, the gradient of every parameter and of the initial state. float64
must agree to 1e-10, float32 to 1e-5 relative to the size of the compared tensor. Weights are
drawn larger than any init (U(-0.6, 0.6)) so every gate works far from its linear range.
"""
from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from rnnlab.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.config import GenerateConfig, ModelConfig
from rnnlab.data import Tokenizer
from rnnlab.data.vocab import Vocab
from rnnlab.decoding import generate_ids as _generate_ids
from rnnlab.models import RNNLM, build_model, detach_state, native
from rnnlab.models.cells import gru, lstm, rnn
from rnnlab.models.stack import RecurrentStack

V, H, B, T = 11, 6, 5, 7  # vocabulary, hidden, batch, steps
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
NATIVE_FUNCTIONS = [(rnn, "NativeRNN"), (gru, "NativeGRU"), (lstm, "NativeLSTM")]


def generate_ids(model, prefix, length, generator=None, suppress=(), **kw):
    return _generate_ids(model, prefix, GenerateConfig(length=length, **kw), generator, suppress)


def _models(model: str, activation: str, num_layers: int, embedding_dim: int, dtype: torch.dtype,
            device: str = "cpu"):
    """scratch, concise and fast models holding the same random weights."""
    cfg = ModelConfig(model=model, impl="scratch", vocab_size=V, hidden_size=H, num_layers=num_layers,
                      embedding_dim=embedding_dim, activation=activation)
    torch.manual_seed(0)
    ref = build_model(cfg).to(dtype)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if not name.startswith("embedding."):
                p.uniform_(-0.6, 0.6)
    out = {"scratch": ref}
    for impl in ("concise", "fast"):
        m = build_model(dataclasses.replace(cfg, impl=impl)).to(dtype)
        m.load_state_dict(ref.state_dict(), strict=True)
        out[impl] = m
    return {k: m.to(device) for k, m in out.items()}


def _two_minibatches(model, dtype, carry: bool, device: str = "cpu"):
    """Logits, states and gradients of two consecutive minibatches (a weighted-sum loss)."""
    g = torch.Generator().manual_seed(1)
    n_states = 2 if model.cfg.model == "lstm" else 1
    state = tuple(torch.randn(model.cfg.num_layers, B, H, dtype=dtype, generator=g).to(device).requires_grad_()
                  for _ in range(n_states))  # each (L, B, H): a nonzero start
    results = []
    for _ in range(2):
        x = torch.randint(0, V, (B, T), generator=g).to(device)
        w = torch.randn(B, T, V, dtype=dtype, generator=g).to(device)
        start = state
        model.zero_grad(set_to_none=True)
        logits, state = model(x, start)
        loss = (logits * w).sum() + sum((s * s).sum() for s in state)  # the states enter the loss too
        loss.backward()
        results.append({
            "logits": logits.detach(),
            **{f"state{i}": s.detach() for i, s in enumerate(state)},
            **{f"grad {n}": p.grad.detach().clone() for n, p in model.named_parameters()},
            **{f"state grad{i}": s.grad.detach().clone() for i, s in enumerate(start) if s.grad is not None},
        })
        if carry:  # sequential sampling: keep the values, cut the graph
            state = tuple(s.requires_grad_() for s in detach_state(state))
        else:  # random sampling: a fresh state for every minibatch
            state = tuple(s.requires_grad_() for s in model.begin_state(B, device))
    return results


def _assert_same(ours: list[dict], ref: list[dict], tol: float, what: str) -> None:
    for step, (a, b) in enumerate(zip(ours, ref)):
        assert a.keys() == b.keys()
        for key in b:
            scale = max(1.0, b[key].abs().max().item())
            err = (a[key] - b[key]).abs().max().item()
            assert err <= tol * scale, f"{what}, minibatch {step + 1}, {key}: max error {err:.3g}"


@pytest.fixture
def kernel(request, monkeypatch):
    """Which loops run: the Python loops, the C++ loops (``native``), or for float32 LSTMs oneDNN's
    fused kernel (the CPU default)."""
    if request.param == "fused" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    if request.param == "native" and not native.available():
        pytest.skip(f"no C++ loops here: {native.reason()}")
    monkeypatch.setattr(lstm, "FUSED", request.param == "fused")
    monkeypatch.setattr(native, "USE", request.param == "native")
    return request.param


# every cell through the Python loops in float64 and float32 and through the C++ loops (float32
# only), and the LSTM through its fused kernel
KERNEL_CASES = ([(m, a, d, "python") for m, a in CELLS for d in (torch.float64, torch.float32)]
                + [(m, a, torch.float32, "native") for m, a in CELLS] + [("lstm", "tanh", torch.float32, "fused")])


@pytest.mark.parametrize("carry", [True, False], ids=["sequential", "random"])
@pytest.mark.parametrize("embedding_dim", [0, 4], ids=["onehot", "embedding"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("model,activation,dtype,kernel", KERNEL_CASES, indirect=["kernel"],
                         ids=[f"{m}-{a}-{str(d)[6:]}-{k}" for m, a, d, k in KERNEL_CASES])
def test_fast_equals_scratch_and_concise(model, activation, num_layers, embedding_dim, carry, dtype, kernel,
                                         monkeypatch):
    calls = []
    for module, name in NATIVE_FUNCTIONS:  # count what ran: the case must test its kernel
        fn = getattr(module, name)
        monkeypatch.setattr(fn, "apply", (lambda f: lambda *a: calls.append(f) or f(*a))(fn.apply))
    models = _models(model, activation, num_layers, embedding_dim, dtype)
    ours = _two_minibatches(models["fast"], dtype, carry)
    assert bool(calls) == (kernel == "native")
    for impl in ("scratch", "concise"):
        _assert_same(ours, _two_minibatches(models[impl], dtype, carry), TOL[dtype], f"fast vs {impl}")


def test_native_loops_build_where_there_is_a_compiler():
    """With a C++ compiler on the machine the extension must build: a silent fallback would hide
    a broken build behind skipped tests."""
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler")
    assert native.available(), native.reason()
    assert native.applies(torch.ones(1)) and not native.applies(torch.ones(1, dtype=torch.float64))


def test_native_build_failure_falls_back_to_python_loops(tmp_path, monkeypatch):
    """A source that does not compile: one notice, ``available()`` False with the reason, and the
    fast model still trains (Python loops)."""
    broken = tmp_path / "loops.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native, "_SOURCE", broken)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "ops", None)
    monkeypatch.setenv("RNNLAB_NATIVE_DIR", str(tmp_path / "cache"))
    assert not native.available() and native.reason()
    m = build_model(ModelConfig(model="gru", impl="fast", vocab_size=V, hidden_size=H))
    logits, _ = m(torch.randint(0, V, (B, T)))
    logits.sum().backward()
    assert m.rnn.weight_hh_l0.grad is not None


def test_native_off_by_environment(monkeypatch):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("RNNLAB_NATIVE", "0")
    assert not native.available() and native.reason() == "RNNLAB_NATIVE=0"


def test_fused_lstm_is_the_cpu_float32_default():
    w = torch.randn(8, 2)
    assert lstm.fused_applies(w) == torch.backends.mkldnn.is_available()
    assert not lstm.fused_applies(w.double())


def test_fast_uses_gather_not_one_hot_and_keeps_parameter_names():
    models = _models("lstm", "tanh", 2, 0, torch.float64)
    assert isinstance(models["fast"], RNNLM) and isinstance(models["fast"].rnn, RecurrentStack)
    assert models["fast"].rnn.accepts_ids and not models["scratch"].rnn.accepts_ids
    names = {n: p.shape for n, p in models["fast"].named_parameters()}
    assert names == {n: p.shape for n, p in models["concise"].named_parameters()}
    assert names["rnn.weight_ih_l0"] == (4 * H, V)


@torch.no_grad()
def _greedy_by_forward(model, prefix: list[int], n: int) -> torch.Tensor:
    """Greedy continuation by one-step ``model.forward`` calls, state carried. -> (1, n)"""
    logits, state = model(torch.tensor([prefix]), model.begin_state(1))  # (1, P, V)
    out = []
    for _ in range(n):
        tok = logits[:, -1].argmax(-1)  # (1,)
        out.append(tok)
        logits, state = model(tok[:, None], state)  # (1, 1, V)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("embedding_dim", [0, 4], ids=["onehot", "embedding"])
@pytest.mark.parametrize("model,activation", CELLS)
def test_fast_generation_matches_scratch_greedy_and_batched(model, activation, embedding_dim):
    models = _models(model, activation, 2, embedding_dim, torch.float64)
    prefix = [1, 2, 3, 4]
    ref = generate_ids(models["scratch"], prefix, 30)
    assert torch.equal(generate_ids(models["fast"], prefix, 30), ref)
    assert torch.equal(ref, _greedy_by_forward(models["concise"], prefix, 30))  # the specialised step, same tokens
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sampled = generate_ids(models["fast"], prefix, 30, temperature=1.0, generator=g1)
    assert torch.equal(sampled, generate_ids(models["scratch"], prefix, 30, temperature=1.0, generator=g2))
    many = generate_ids(models["fast"], prefix, 30, num_samples=3)
    assert many.shape == (3, 30) and all(torch.equal(row, ref[0]) for row in many)  # greedy: identical rows


@pytest.mark.parametrize("src,dst", [("fast", "scratch"), ("concise", "fast"), ("scratch", "fast")])
def test_checkpoint_moves_between_impls(tmp_path, src, dst):
    vocab = Vocab.build(list("abcdefghij "), separator="")
    cfg = ModelConfig(model="lstm", impl=src, vocab_size=len(vocab), hidden_size=8, num_layers=2)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(tmp_path / "ckpt", model, Tokenizer(vocab), cfg)
    ck = load_checkpoint(tmp_path / "ckpt", impl=dst)
    assert ck.model_config.impl == dst
    x = torch.randint(0, len(vocab), (3, 9))
    with torch.no_grad():
        want, _ = model.eval()(x, None)
        got, _ = ck.model(x, None)
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model,activation", CELLS)
def test_fast_and_concise_on_cuda_equal_scratch_on_cpu(model, activation):
    cpu = _two_minibatches(_models(model, activation, 2, 0, torch.float64)["scratch"], torch.float64, True)
    gpu = _models(model, activation, 2, 0, torch.float64, device="cuda")
    for impl in ("fast", "concise"):
        res = _two_minibatches(gpu[impl], torch.float64, True, device="cuda")
        res = [{k: v.cpu() for k, v in r.items()} for r in res]
        _assert_same(res, cpu, 1e-9, f"{impl} on cuda vs scratch on cpu")


@pytest.mark.parametrize("embedding_dim", [0, 4], ids=["onehot", "embedding"])
@pytest.mark.parametrize("model,activation", CELLS)
def test_native_greedy_generation_equals_python_steps(model, activation, embedding_dim, monkeypatch):
    """Greedy generation's C++ loop (float32, CPU) gives the tokens of the Python step loop: two
    layers, three rows, a suppressed id."""
    if not native.available():
        pytest.skip(f"no C++ loops here: {native.reason()}")
    m = _models(model, activation, 2, embedding_dim, torch.float32)["fast"]
    used = []
    real_greedy = RNNLM.greedy_tokens
    monkeypatch.setattr(RNNLM, "greedy_tokens", lambda self, *a: used.append(1) or real_greedy(self, *a))
    ours = generate_ids(m, [1, 2, 3, 4], 40, num_samples=3, suppress=[5])
    assert used and ours.shape == (3, 40) and not (ours == 5).any()
    monkeypatch.setattr(native, "_state", {"ok": False, "why": "test: Python steps"})
    assert torch.equal(ours, generate_ids(m, [1, 2, 3, 4], 40, num_samples=3, suppress=[5]))


def test_cached_step_follows_weight_changes():
    """Generation reuses the model's step while the weights are unchanged, and rebuilds it after an
    in-place update or a load_state_dict: each result equals a fresh model's with those weights."""
    models = _models("gru", "tanh", 1, 0, torch.float32)
    m, other = models["fast"], _models("gru", "tanh", 1, 0, torch.float32)["fast"]

    def fresh(state_dict):
        f = build_model(m.cfg)
        f.load_state_dict(state_dict)
        return generate_ids(f, [1, 2], 25)

    assert torch.equal(generate_ids(m, [1, 2], 25), fresh(m.state_dict()))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(-1.7)
    assert torch.equal(generate_ids(m, [1, 2], 25), fresh(m.state_dict()))
    with torch.no_grad():
        for p in other.parameters():
            p.uniform_(-1, 1)
    m.load_state_dict(other.state_dict())
    assert torch.equal(generate_ids(m, [1, 2], 25), fresh(other.state_dict()))
