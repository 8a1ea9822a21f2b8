"""minGRU and minLSTM: the parallel scan equals the step-by-step recurrence (outputs, final state,
gradients; float64 to 1e-10, float32 to 1e-5), gradcheck, chunks with carried state equal the whole
sequence, nothing looks ahead, and the rest of rnnlab (checkpoints, generation, suggestions,
resume) works with them."""
import dataclasses

import pytest
import torch

from rnnlab.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.config import DataConfig, GenerateConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.data import Tokenizer, Vocab
from rnnlab.decoding import generate_text
from rnnlab.errors import UsageError
from rnnlab.models import build_model, native
from rnnlab.models.cells import mingru
from rnnlab.models.cells.mingru import linear_scan, log_scan
from rnnlab.pipeline import stored_configs, train_run
from rnnlab.suggest import SuggestEngine

CELLS = ["mingru", "minlstm"]
V, D, B, T = 13, 8, 3, 37  # T spans several scan chunks and a partial one
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _pair(cell, dtype, layers=2, seed=0):
    cfg = ModelConfig(model=cell, impl="scratch", vocab_size=V, hidden_size=D, embedding_dim=D, num_layers=layers)
    torch.manual_seed(seed)
    ref = build_model(cfg).to(dtype)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # away from the init's symmetric values
    fast = build_model(dataclasses.replace(cfg, impl="fast")).to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _run(model, dtype, tokens, state):
    model.zero_grad(set_to_none=True)
    logits, new = model(tokens, state)
    g = torch.Generator().manual_seed(3)
    loss = (logits * torch.randn(logits.shape, generator=g, dtype=dtype)).sum() + sum((s * s).sum() for s in new)
    loss.backward()
    return {"logits": logits.detach(), **{f"state{i}": s.detach() for i, s in enumerate(new)},
            **{n: p.grad.clone() for n, p in model.named_parameters()}}


@pytest.mark.parametrize("dtype,kernel", [(torch.float64, "log"), (torch.float32, "log"), (torch.float32, "native")],
                         ids=["f64-log", "f32-log", "f32-native"])
@pytest.mark.parametrize("cell", CELLS)
def test_parallel_scan_equals_the_recurrence(cell, dtype, kernel, monkeypatch):
    if kernel == "native" and not native.available():
        pytest.skip(f"no C++ loops here: {native.reason()}")
    monkeypatch.setattr(native, "USE", kernel == "native")
    calls = []
    monkeypatch.setattr(mingru.NativeScan, "apply", (lambda f: lambda *a: calls.append(1) or f(*a))(mingru.NativeScan.apply))
    ref, fast = _pair(cell, dtype)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    start = tuple(torch.randn(s.shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
                  for s in ref.begin_state(B))  # a nonzero start of either sign
    a, b = _run(ref, dtype, tokens, start), _run(fast, dtype, tokens, start)
    assert bool(calls) == (kernel == "native")  # the case ran the kernel it names
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        scale = max(1.0, a[k].abs().max().item())
        assert (a[k] - b[k]).abs().max().item() <= TOL[dtype] * scale, k
        assert a[k].abs().max() > 0, f"{k}: zero, the check would be vacuous"


def test_the_log_scan_is_precise_for_long_sequences_and_saturated_gates():
    g = torch.Generator().manual_seed(0)
    Tl = 2000
    log_a = -torch.nn.functional.softplus(torch.randn(Tl, 2, 5, generator=g) * 6)  # gates near 0 and near 1
    log_b = torch.randn(Tl, 2, 5, generator=g)
    h0 = torch.randn(2, 5, generator=g)
    want = linear_scan(log_a.double().exp(), log_b.double().exp(), h0.double())
    got = log_scan(log_a, log_b, h0)
    assert ((got.double() - want).abs() / want.abs().clamp(min=1)).max() < 1e-5


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_of_the_scan_and_the_block(cell):
    ref, fast = _pair(cell, torch.float64, layers=1)
    tokens = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(4))
    x = fast.embedding(tokens).transpose(0, 1).detach().requires_grad_()  # (T, B, D)
    h0 = torch.rand(2, D, dtype=torch.float64, requires_grad=True)
    u0 = torch.randn(2, D, dtype=torch.float64, requires_grad=True)
    block = fast.rnn.blocks[0]
    assert torch.autograd.gradcheck(lambda x, h, u: block(x, h, u, parallel=True)[0], (x, h0, u0))
    la = -torch.nn.functional.softplus(torch.randn(20, 2, 3, dtype=torch.float64)).requires_grad_()
    lb = torch.randn(20, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, h: log_scan(a, b, h, chunk=7), (la, lb, h0[:, :3].detach().requires_grad_()))


@pytest.mark.parametrize("impl", ["scratch", "fast"])
@pytest.mark.parametrize("cell", CELLS)
def test_chunks_with_carried_state_equal_the_whole_sequence(cell, impl):
    ref, fast = _pair(cell, torch.float64)
    m = ref if impl == "scratch" else fast
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole, s_whole = m(tokens)
        parts, state = [], m.begin_state(B)
        for cut in ((0, 5), (5, 6), (6, 30), (30, T)):
            out, state = m(tokens[:, cut[0]:cut[1]], state)
            parts.append(out)
        stepped, st = [], m.begin_state(B)
        for t in range(T):
            logits, st = m.step(tokens[:, t], st)
            stepped.append(logits)
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-10, rtol=0)
    assert torch.allclose(torch.stack(stepped, 1), whole, atol=1e-10, rtol=0)
    for a, b in zip(state, s_whole):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_no_output_looks_at_a_later_token(cell):
    _, m = _pair(cell, torch.float64)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        a, _ = m(tokens)
        for t in (0, 10, T - 2):
            changed = tokens.clone()
            changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
            b, _ = m(changed)
            assert torch.equal(a[:, :t + 1], b[:, :t + 1])
            assert not torch.equal(a[:, t + 1:], b[:, t + 1:])


def test_the_block_needs_an_embedding_of_its_width():
    with pytest.raises(UsageError, match="--embedding-dim equal to --hidden-size"):
        build_model(ModelConfig(model="mingru", impl="fast", vocab_size=V, hidden_size=D, embedding_dim=0))
    with pytest.raises(UsageError, match="--impl concise is not available for --model minlstm"):
        build_model(ModelConfig(model="minlstm", impl="concise", vocab_size=V, hidden_size=D, embedding_dim=D))


@pytest.mark.parametrize("cell", CELLS)
def test_checkpoint_generation_suggestions_and_exact_resume(cell, tmp_path):
    text = "the minimal cell reads the whole sequence at once. " * 30
    (tmp_path / "t.txt").write_text(text)

    def configs(epochs):
        return (DataConfig(path=str(tmp_path / "t.txt")),
                ModelConfig(model=cell, impl="fast", hidden_size=16, embedding_dim=16, num_layers=2, dropout=0.1),
                TrainConfig(batch_size=4, num_steps=20, optimizer="adam", lr=0.01, seed=1),
                RunConfig(recipe="book", epochs=epochs, predict_every=0))

    full = train_run(*configs(4), tmp_path / "full", log=lambda m: None)
    assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]
    train_run(*configs(2), tmp_path / "part", log=lambda m: None)
    d, m, t, r = stored_configs(tmp_path / "part")
    resumed = train_run(d, m, t, r.replace(epochs=4), tmp_path / "part", log=lambda m: None, resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    ck = load_checkpoint(tmp_path / "full")
    out = generate_text(ck.model, ck.tokenizer, "the min", GenerateConfig(length=20))[0]
    assert out.startswith("the min") and len(out) == 27
    scratch = load_checkpoint(tmp_path / "full", impl="scratch")  # the same weights run step by step
    assert generate_text(scratch.model, scratch.tokenizer, "the min", GenerateConfig(length=20))[0] == out
    s = SuggestEngine(ck.model, ck.tokenizer).suggest_batch
    from rnnlab.suggest import SuggestRequest

    answer = s([SuggestRequest("the minimal ce", 3)])[0]
    assert answer.mode == "complete" and len(answer.next_chars) == 3
    save_checkpoint(tmp_path / "copy", ck.model, Tokenizer(Vocab.build(list(text))), ck.model_config)
    assert load_checkpoint(tmp_path / "copy").model_config.model == cell
