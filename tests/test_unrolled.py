"""The AWS post's unrolled many-to-one model: its data preparation, streaming forward, state,
generation and training through the shared Trainer."""
from __future__ import annotations

import pytest
import torch

from rnnlab.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.config import GenerateConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.data import Tokenizer
from rnnlab.data.vocab import Vocab
from rnnlab.errors import UsageError
from rnnlab.models import UnrolledRNN, build_model, window_dataset
from rnnlab.models.unrolled import PAD
from rnnlab.decoding import generate_ids as _generate_ids
from rnnlab.evaluation import evaluate
from rnnlab.training import Trainer


def generate_ids(model, prefix, length, generator=None, suppress=(), **kw):
    return _generate_ids(model, prefix, GenerateConfig(length=length, **kw), generator, suppress)

V = 9


def _model(window=3, embedding_dim=5, hidden_size=8, seed=0, **kw) -> UnrolledRNN:
    torch.manual_seed(seed)
    m = build_model(ModelConfig(model="unrolled", vocab_size=V, hidden_size=hidden_size, window=window,
                                embedding_dim=embedding_dim, **kw)).double()
    with torch.no_grad():  # biases are zero at init; make them matter
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def _ids(n, seed=1):
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed))


# -- data preparation -------------------------------------------------------------------------

def test_window_dataset_every_sliding_window_and_the_next_token():
    ids = torch.arange(10)
    X, y = window_dataset(ids, 3)
    assert X.tolist() == [[i, i + 1, i + 2] for i in range(7)]
    assert y.tolist() == list(range(3, 10))


def test_window_dataset_with_the_posts_stride():
    # The post cuts "I_love_mxnet" into non-overlapping triples, each followed by its 4th character.
    text = "I_love_mxnet"
    ids = torch.tensor([ord(c) for c in text])
    X, y = window_dataset(ids, 3, stride=3)
    windows = ["".join(map(chr, row)) for row in X.tolist()]
    assert windows == ["I_l", "ove", "_mx"]
    assert "".join(map(chr, y.tolist())) == "o_n"


@pytest.mark.parametrize("n,window", [(3, 3), (2, 3), (0, 1)])
def test_window_dataset_too_short_is_empty(n, window):
    X, y = window_dataset(torch.arange(n), window)
    assert X.shape == (0, window) and y.shape == (0,)


def test_window_dataset_rejects_bad_sizes():
    with pytest.raises(ValueError):
        window_dataset(torch.arange(5), 0)


# -- the model --------------------------------------------------------------------------------

def test_predict_windows_is_the_posts_wiring():
    m = _model(window=3)
    X = torch.randint(0, V, (6, 3), generator=torch.Generator().manual_seed(2))
    relu, dense1, dense2, dense3 = torch.relu, m.input_layer, m.hidden_layer, m.head
    emb = m.embedding(X)  # (6, 3, E)
    c1, c2, c3 = (relu(dense1(emb[:, k])) for k in range(3))
    h = relu(dense2(c1)) + c2  # the yellow arrow, then the addition
    expected = dense3(relu(dense2(h)) + c3)
    assert torch.allclose(m.predict_windows(X), expected, atol=1e-12, rtol=0)


def test_one_hot_inputs_equal_multiplying_by_the_input_layer():
    m = _model(window=2, embedding_dim=0)
    assert m.embedding is None and m.input_layer.weight.shape == (8, V)
    X = torch.randint(0, V, (5, 2), generator=torch.Generator().manual_seed(3))
    onehot = torch.nn.functional.one_hot(X, V).double()  # (5, 2, V)
    c1, c2 = (torch.relu(m.input_layer(onehot[:, k])) for k in range(2))
    expected = m.head(torch.relu(m.hidden_layer(c1)) + c2)
    assert torch.allclose(m.predict_windows(X), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("embedding_dim", [0, 5])
@pytest.mark.parametrize("window", [1, 3, 4])
def test_streaming_forward_equals_window_by_window(window, embedding_dim):
    m = _model(window=window, embedding_dim=embedding_dim)
    ids = _ids(30)
    logits, (prev,) = m(ids[None, :-1], m.begin_state(1))  # (1, 29, V)
    X, y = window_dataset(ids, window)
    assert logits.shape == (1, 29, V) and prev.shape == (1, 1, window - 1)  # (L=1, B, W-1)
    assert torch.allclose(logits[0, window - 1:], m.predict_windows(X), atol=1e-12, rtol=0)
    assert prev[0, 0].tolist() == ids[29 - (window - 1):29].tolist()


def test_start_of_stream_reads_a_shorter_chain():
    # Parameters do not depend on the window, so one state_dict fits every W: at position t < W-1
    # the W=5 model has read t+1 tokens, exactly what the W=t+1 model reads there.
    big = _model(window=5)
    tokens = _ids(6, seed=4)[None]  # (1, 6)
    logits, _ = big(tokens)
    for w in range(1, 5):
        small = build_model(ModelConfig(model="unrolled", vocab_size=V, hidden_size=8, window=w,
                                        embedding_dim=5)).double().eval()
        small.load_state_dict(big.state_dict())
        ref, _ = small(tokens)
        assert torch.allclose(logits[0, w - 1], ref[0, w - 1], atol=1e-12, rtol=0)
        if w > 1:  # and it differs from a longer chain, so the check has teeth
            assert not torch.allclose(logits[0, w], ref[0, w])


def test_begin_state_is_padding_and_batches_are_independent():
    m = _model(window=4)
    (prev,) = m.begin_state(3)
    assert prev.shape == (1, 3, 3) and prev.dtype == torch.long and (prev == PAD).all()
    tokens = torch.randint(0, V, (3, 7), generator=torch.Generator().manual_seed(5))
    logits, _ = m(tokens)
    for b in range(3):
        row, _ = m(tokens[b:b + 1])
        assert torch.allclose(logits[b], row[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_state_carry_equals_one_call_over_the_concatenation(chunk):
    m = _model(window=4)
    tokens = torch.randint(0, V, (2, 15), generator=torch.Generator().manual_seed(6))
    whole, (prev_whole,) = m(tokens, m.begin_state(2))
    state, parts = m.begin_state(2), []
    for i in range(0, 15, chunk):  # chunks shorter than the window too
        out, state = m(tokens[:, i:i + chunk], state)
        parts.append(out)
    assert torch.allclose(torch.cat(parts, dim=1), whole, atol=1e-12, rtol=0)
    assert torch.equal(state[0], prev_whole)
    assert torch.equal(prev_whole[0], tokens[:, -3:])


def test_gradients_reach_every_parameter():
    m = _model(window=3).train()
    logits, _ = m(_ids(12, seed=7)[None])
    logits.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# -- generation -------------------------------------------------------------------------------

def _last_token_model() -> UnrolledRNN:
    """A hand-set model whose prediction depends only on the window's last token: next = (x + 2) % V."""
    m = build_model(ModelConfig(model="unrolled", vocab_size=V, hidden_size=V, window=3, embedding_dim=0))
    with torch.no_grad():
        m.input_layer.weight.copy_(torch.eye(V) * 5)
        m.input_layer.bias.zero_()
        m.hidden_layer.weight.zero_()
        m.hidden_layer.bias.fill_(-1.0)  # relu(W_H z + b_H) = 0: the chain adds nothing
        m.head.weight.copy_(torch.eye(V).roll(2, dims=0) * 5)  # unit x votes for token x + 2
        m.head.bias.zero_()
    return m.eval()


def test_generation_of_a_last_token_model_is_predictable():
    m = _last_token_model()
    out = generate_ids(m, [4, 1, 0], 6)[0].tolist()
    assert out == [2, 4, 6, 8, 1, 3]


def test_greedy_generation_slides_the_window_like_the_post():
    m = _model(window=3)
    for prefix in ([3, 1, 4, 1, 5], [2]):  # longer and shorter than the window
        got = generate_ids(m, prefix, 15)[0].tolist()
        assert got == generate_ids(m, prefix, 15)[0].tolist()  # greedy is deterministic
        seq = list(prefix)
        for _ in range(15):  # the post's loop: predict from the last 3, append, drop the first
            window = ([PAD] * 3 + seq)[-3:]
            seq.append(int(m.predict_windows(torch.tensor([window]))[0].argmax()))
        assert got == seq[len(prefix):]


def test_sampled_generation_with_several_rows():
    m = _model(window=3)
    g = torch.Generator().manual_seed(0)
    out = generate_ids(m, [1, 2], 10, temperature=1.0, num_samples=4, generator=g)
    assert out.shape == (4, 10) and out.min() >= 0 and out.max() < V


# -- config, checkpoint, training -------------------------------------------------------------

def test_config_validates_window_and_old_configs_get_the_default():
    with pytest.raises(UsageError, match="--window"):
        build_model(ModelConfig(model="unrolled", vocab_size=V, window=0))
    with pytest.raises(UsageError, match="--window applies to --model unrolled"):
        build_model(ModelConfig(model="gru", vocab_size=V, window=5))
    data = ModelConfig(model="lstm", vocab_size=V).to_dict()
    del data["window"]
    assert ModelConfig.from_dict(data).window == 3


def test_checkpoint_round_trip(tmp_path):
    vocab = Vocab.build(list("abcdefgh"))
    cfg = ModelConfig(model="unrolled", vocab_size=len(vocab), hidden_size=8, embedding_dim=4, window=4)
    torch.manual_seed(0)
    m = build_model(cfg)
    save_checkpoint(tmp_path, m, Tokenizer(vocab), cfg)
    ck = load_checkpoint(tmp_path)
    assert isinstance(ck.model, UnrolledRNN) and ck.model.window == 4
    tokens = torch.randint(0, len(vocab), (2, 9))
    assert torch.equal(ck.model(tokens)[0], m.eval()(tokens)[0])


def _train_on_pattern(window: int):
    ids = torch.tensor([1, 2, 3, 2, 4] * 120)  # "abcbd" repeated
    torch.manual_seed(0)
    m = build_model(ModelConfig(model="unrolled", vocab_size=5, hidden_size=32, embedding_dim=8, window=window))
    before = evaluate(m, ids, batch_size=4, num_steps=10)["loss"]
    history = Trainer(m, TrainConfig(batch_size=4, num_steps=10, lr=1.0, seed=0), ids, run=RunConfig(epochs=8)).fit()
    after = evaluate(m, ids, batch_size=4, num_steps=10)["loss"]
    return m, before, history, after


def test_training_learns_a_pattern_that_needs_the_window():
    # In "abcbd" repeated, what follows "b" depends on the token before it: a window of 3 learns
    # the text exactly, a window of 1 (a bigram model) stays near its floor 2/5 ln 2 = 0.28 nats.
    m, before, history, after = _train_on_pattern(3)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert after < 0.05 < before
    assert generate_ids(m, [1, 2, 3], 10)[0].tolist() == [2, 4, 1, 2, 3, 2, 4, 1, 2, 3]
    _, _, _, bigram_after = _train_on_pattern(1)
    assert bigram_after > 0.2
