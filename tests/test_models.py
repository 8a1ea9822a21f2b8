"""The from-scratch layers against torch.nn, numeric gradient checks, and the model contract.

Every comparison runs in float64 with random weights of a useful size (not the book's tiny
N(0, 0.01^2) initialisation, under which every cell is nearly linear and errors hide) and a
nonzero random initial state.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from shipped import shipped_cells

from rnnlab.config import ModelConfig
from rnnlab.models import build_model
from rnnlab.models.cells import get_cell
from rnnlab.models.stack import RecurrentStack

TOL = 1e-10
T, B, I, H = 7, 3, 5, 4  # steps, batch, input size, hidden size

TORCH_LAYERS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
CONCISE = [n for n in shipped_cells() if "concise" in get_cell(n).impls]  # the registry's cells with a torch layer
CASES = [(m, a, L) for m, a in [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
         for L in (1, 2)]


def _pair(model: str, activation: str, num_layers: int, seed: int = 0):
    """A scratch stack and a torch.nn layer holding the same random float64 weights."""
    torch.manual_seed(seed)
    kwargs = {"nonlinearity": activation} if model == "rnn" else {}
    ref = TORCH_LAYERS[model](I, H, num_layers, **kwargs).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-0.6, 0.6)  # larger than torch's default so every gate is far from linear
    cfg = ModelConfig(model=model, hidden_size=H, num_layers=num_layers, activation=activation)
    ours = RecurrentStack(get_cell(model), "scratch", I, cfg).double()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    return ours, ref


def _inputs(model: str, num_layers: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=g, requires_grad=True)  # (T, B, I)
    state = tuple(torch.randn(num_layers, B, H, dtype=torch.float64, generator=g, requires_grad=True)
                  for _ in range(2 if model == "lstm" else 1))  # each (L, B, H)
    return x, state


def _run(layer, model: str, x, state, scratch: bool):
    if scratch:
        return layer(x, state)
    out, s = layer(x, state if model == "lstm" else state[0])
    return out, (s,) if isinstance(s, torch.Tensor) else tuple(s)


@pytest.mark.parametrize("model,activation,num_layers", CASES)
def test_scratch_matches_torch_outputs_states_and_gradients(model, activation, num_layers):
    ours, ref = _pair(model, activation, num_layers)
    results = []
    for layer, scratch in ((ours, True), (ref, False)):
        x, state = _inputs(model, num_layers)
        out, new_state = _run(layer, model, x, state, scratch)
        # A loss that weighs every output and every final-state entry differently.
        g = torch.Generator().manual_seed(2)
        loss = (out * torch.randn(out.shape, dtype=torch.float64, generator=g)).sum()
        for s in new_state:
            loss = loss + (s * torch.randn(s.shape, dtype=torch.float64, generator=g)).sum()
        layer.zero_grad()
        loss.backward()
        grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
        grads["input"] = x.grad.clone()
        for i, s in enumerate(state):
            grads[f"state{i}"] = s.grad.clone()
        results.append((out.detach(), tuple(s.detach() for s in new_state), grads))

    (out_a, state_a, grads_a), (out_b, state_b, grads_b) = results
    assert out_a.shape == (T, B, H)
    assert (out_a - out_b).abs().max().item() <= TOL
    assert len(state_a) == len(state_b) == (2 if model == "lstm" else 1)
    for sa, sb in zip(state_a, state_b):
        assert sa.shape == (num_layers, B, H)
        assert (sa - sb).abs().max().item() <= TOL
    assert set(grads_a) == set(grads_b)
    assert len(grads_a) == 4 * num_layers + 1 + len(state_a)
    for name in grads_a:
        assert grads_a[name].abs().max().item() > 0, f"{name}: zero gradient, the check would be vacuous"
        assert (grads_a[name] - grads_b[name]).abs().max().item() <= TOL, name


@pytest.mark.parametrize("model", CONCISE)
def test_scratch_dropout_between_layers_only_in_training(model):
    ours, _ = _pair(model, "tanh", 2)
    ours.cfg.dropout = 0.5
    x, state = _inputs(model, 2)
    ours.eval()
    out_eval, _ = ours(x, state)
    torch.manual_seed(3)
    ours.train()
    out_train, _ = ours(x, state)
    assert not torch.allclose(out_eval, out_train)  # dropout acted between the two layers
    ours.cfg.dropout = 0.0
    out_plain, _ = ours(x, state)
    assert torch.equal(out_eval, out_plain)  # eval mode ignores dropout


# -- numeric gradient checks of each cell ------------------------------------------------------

def _cell_args(gates: int, seed: int = 4, n: int = 2, i: int = 3, h: int = 3):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return (torch.randn(*shape, dtype=torch.float64, generator=g) * 0.7).requires_grad_()
    return r(n, i), r(n, h), r(gates * h, i), r(gates * h, h), r(gates * h), r(gates * h)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradcheck_rnn_cell(activation):
    x, h, *params = _cell_args(1)
    cell, cfg = get_cell("rnn"), ModelConfig(model="rnn", activation=activation)
    assert torch.autograd.gradcheck(lambda x, h, *p: cell.step(x, (h,), p, cfg)[0], (x, h, *params))


def test_gradcheck_gru_cell():
    x, h, *params = _cell_args(3)
    cell, cfg = get_cell("gru"), ModelConfig(model="gru")
    assert torch.autograd.gradcheck(lambda x, h, *p: cell.step(x, (h,), p, cfg)[0], (x, h, *params))


def test_gradcheck_lstm_cell():
    x, h, *params = _cell_args(4)
    c = (torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))).requires_grad_()
    cell, cfg = get_cell("lstm"), ModelConfig(model="lstm")
    assert torch.autograd.gradcheck(lambda x, h, c, *p: cell.step(x, (h, c), p, cfg), (x, h, c, *params))


# -- whole models through the factory ---------------------------------------------------------

V = 11


def _model_pair(model: str, embedding_dim: int, num_layers: int = 2, dropout: float = 0.0, activation: str = "tanh"):
    kw = dict(model=model, vocab_size=V, hidden_size=H, num_layers=num_layers, embedding_dim=embedding_dim,
              dropout=dropout, activation=activation)
    torch.manual_seed(0)
    scratch = build_model(ModelConfig(impl="scratch", **kw)).double()
    concise = build_model(ModelConfig(impl="concise", **kw)).double()
    with torch.no_grad():
        for p in scratch.parameters():
            p.uniform_(-0.6, 0.6)
    concise.load_state_dict(scratch.state_dict(), strict=True)
    return scratch, concise


@pytest.mark.parametrize("embedding_dim", [0, 6])
@pytest.mark.parametrize("model,activation", [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")])
def test_scratch_and_concise_models_agree(model, activation, embedding_dim):
    scratch, concise = _model_pair(model, embedding_dim, dropout=0.3, activation=activation)
    assert set(scratch.state_dict()) == set(concise.state_dict())
    scratch.eval(), concise.eval()  # dropout > 0 but inactive: both must give the same numbers
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(6))
    state = tuple(torch.randn(s.shape, dtype=torch.float64) for s in scratch.begin_state(B))
    logits_a, state_a = scratch(tokens, state)
    logits_b, state_b = concise(tokens, state)
    assert logits_a.shape == (B, T, V)
    assert (logits_a - logits_b).abs().max().item() <= TOL
    for sa, sb in zip(state_a, state_b, strict=True):
        assert (sa - sb).abs().max().item() <= TOL


@pytest.mark.parametrize("impl", ["scratch", "concise"])
@pytest.mark.parametrize("model", CONCISE)
@pytest.mark.parametrize("embedding_dim", [0, 6])
def test_contract_shapes_and_state_carry(impl, model, embedding_dim):
    torch.manual_seed(0)
    m = build_model(ModelConfig(model=model, impl=impl, vocab_size=V, hidden_size=H, num_layers=2,
                                embedding_dim=embedding_dim)).double().eval()
    state = m.begin_state(B)
    assert isinstance(state, tuple) and len(state) == (2 if model == "lstm" else 1)
    for s in state:
        assert s.shape == (2, B, H) and s.dtype == torch.float64 and not s.any()
    tokens = torch.randint(0, V, (B, 2 * T), generator=torch.Generator().manual_seed(7))
    whole, state_whole = m(tokens, m.begin_state(B))
    first, s1 = m(tokens[:, :T], m.begin_state(B))
    second, s2 = m(tokens[:, T:], s1)
    assert whole.shape == (B, 2 * T, V)
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-12, rtol=0)
    for a, b in zip(s2, state_whole, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    default, _ = m(tokens)  # state=None means begin_state
    assert torch.equal(default, whole)


@pytest.mark.parametrize("model", CONCISE)
def test_book_initialisation_for_scratch(model):
    torch.manual_seed(0)
    m = build_model(ModelConfig(model=model, impl="scratch", vocab_size=50, hidden_size=64, num_layers=2))
    weights = [p for n, p in m.named_parameters() if "weight" in n]
    biases = [p for n, p in m.named_parameters() if "bias" in n]
    assert len(weights) == 5 and len(biases) == 5  # 2 layers x (ih, hh) + head
    for w in weights:
        assert abs(w.std().item() - 0.01) < 0.002 and abs(w.mean().item()) < 0.002
    for b in biases:
        assert not b.any()


def test_torch_initialisation_for_concise():
    torch.manual_seed(0)
    m = build_model(ModelConfig(model="lstm", impl="concise", vocab_size=50, hidden_size=64))
    bound = 1 / 64 ** 0.5
    rnn_params = [p for n, p in m.named_parameters() if n.startswith("rnn.")]
    assert rnn_params and all(p.abs().max().item() <= bound for p in rnn_params)
    assert all(p.std().item() > 0.5 * bound / 3 ** 0.5 for p in rnn_params)  # U(-b, b) has std b/sqrt(3)


def test_embedding_dropout_changes_training_output_only():
    scratch, _ = _model_pair("gru", 6, num_layers=1, dropout=0.5)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(8))
    scratch.eval()
    a, _ = scratch(tokens)
    b, _ = scratch(tokens)
    assert torch.equal(a, b)
    scratch.train()
    torch.manual_seed(9)
    c, _ = scratch(tokens)
    assert not torch.allclose(a, c)


# -- regularisation: locked dropout, weight drop ------------------------------------------------

def test_locked_dropout_uses_one_mask_per_sequence():
    torch.manual_seed(0)
    m = build_model(ModelConfig(model="lstm", impl="fast", vocab_size=V, hidden_size=H, embedding_dim=6,
                                dropout=0.5, locked_dropout=True)).train()
    x = torch.ones(5, 4, 6)  # (T, B, F)
    y = m._dropout(x, 0.5)
    assert torch.equal(y, y[:1].expand_as(y))  # the same at every step
    assert (y == 0).any() and (y == 2).any()
    m.cfg.locked_dropout = False
    z = m._dropout(x, 0.5)
    assert not torch.equal(z, z[:1].expand_as(z))
    m.eval()
    assert torch.equal(m._dropout(x, 0.5), x)


@pytest.mark.parametrize("model", CONCISE)
def test_weight_drop_masks_the_recurrent_weights_in_training_only(model, monkeypatch):
    torch.manual_seed(0)
    m = build_model(ModelConfig(model=model, impl="fast", vocab_size=V, hidden_size=H, weight_drop=0.5))
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    if model == "lstm":  # the fused kernel still runs, on the dropped copy
        import rnnlab.models.cells.lstm as lstm_cell

        seen = []
        real = torch.lstm
        monkeypatch.setattr(torch, "lstm", lambda *a: seen.append(a[2][1]) or real(*a))
    m.train()
    a, _ = m(tokens)
    b, _ = m(tokens)
    assert not torch.allclose(a, b)  # a new mask per minibatch
    a.sum().backward()
    assert m.rnn.weight_hh_l0.grad is not None and (m.rnn.weight_hh_l0.grad == 0).any()
    m.eval()
    c, _ = m(tokens)
    d, _ = m(tokens)
    assert torch.equal(c, d)
    if model == "lstm" and lstm_cell.fused_applies(m.rnn.weight_hh_l0):
        assert seen and (seen[0] == 0).sum() > 0 and not torch.equal(seen[0], m.rnn.weight_hh_l0)
    with pytest.raises(Exception, match="--weight-drop needs --impl fast"):
        build_model(ModelConfig(model=model, impl="concise", vocab_size=V, hidden_size=H, weight_drop=0.5))


def test_every_cell_with_a_torch_layer_is_compared_with_it():
    """The reference tests above loop over the registry's cells that have ``concise``: each needs its
    torch layer here (a new cell with one is compared too, not skipped)."""
    assert set(CONCISE) <= set(TORCH_LAYERS), sorted(set(CONCISE) - set(TORCH_LAYERS))
