import torch

from rnnlab.config import ModelConfig
from rnnlab.data.vocab import Vocab
from rnnlab.models import build_model
from rnnlab.sampling import filter_logits, generate, generate_ids, next_token


def _setup():
    torch.manual_seed(0)
    vocab = Vocab.build(list("the time traveller"))
    model = build_model(ModelConfig(model="gru", vocab_size=len(vocab), hidden_size=16))
    return model, vocab


def test_greedy_generation_equals_stepping_the_model_by_hand():
    model, vocab = _setup()
    prefix = vocab.encode(list("time"))
    got = generate_ids(model, prefix, 12)[0].tolist()
    # the book's predict_ch8: feed the prefix one token at a time, then argmax step by step
    state = model.begin_state(1)
    with torch.no_grad():
        for t in prefix:
            logits, state = model(torch.tensor([[t]]), state)
        out = []
        for _ in range(12):
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            logits, state = model(torch.tensor([[nxt]]), state)
    assert got == out


def test_generate_returns_prefix_plus_length_tokens():
    model, vocab = _setup()
    text = generate(model, vocab, "time ", 20)
    ids = generate_ids(model, vocab.encode(list("time ")), 20, suppress=[vocab.unk_id])[0].tolist()
    assert text == "time " + vocab.decode(ids) and len(ids) == 20


def test_temperature_zero_and_top_k_one_are_greedy():
    logits = torch.randn(4, 30)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(next_token(logits, 0.0), logits.argmax(-1))
    assert torch.equal(next_token(logits, 1.0, top_k=1, generator=g), logits.argmax(-1))


def test_top_k_and_top_p_keep_the_right_sets():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False, False]]
    # top-p keeps the smallest prefix of the ranking whose mass reaches p
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.65)).tolist() == [[True, True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.71)).tolist() == [[True, True, True, False, False]]


def test_seeded_sampling_repeats_and_batches_differ():
    model, vocab = _setup()
    ids = vocab.encode(list("the"))
    a = generate_ids(model, ids, 30, temperature=1.0, num_samples=4, generator=torch.Generator().manual_seed(1))
    b = generate_ids(model, ids, 30, temperature=1.0, num_samples=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (4, 30)
    assert len({tuple(r) for r in a.tolist()}) > 1


def test_unk_is_never_generated():
    model, vocab = _setup()
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[vocab.unk_id] = 100.0  # the model would always pick <unk>
    text = generate(model, vocab, "the ", 15)
    assert "<unk>" not in text and len(text) == len("the ") + 15
    ids = generate_ids(model, vocab.encode(list("the")), 15, temperature=1.0,
                       generator=torch.Generator().manual_seed(0), suppress=[vocab.unk_id])
    assert vocab.unk_id not in ids.tolist()[0]
    assert generate_ids(model, vocab.encode(list("the")), 5)[0].tolist() == [vocab.unk_id] * 5  # no suppress asked


def test_prefix_with_unseen_tokens_and_no_unk_explains():
    import pytest

    from rnnlab.errors import RnnlabError
    from rnnlab.sampling import generate_text

    vocab = Vocab.build(list("abc "), unk=None)
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="rnn", vocab_size=len(vocab), hidden_size=8))
    with pytest.raises(RnnlabError, match="has no <unk>; remove them"):
        generate_text(model, vocab, "abz", 5)
    assert generate_text(model, vocab, "ab", 5)[0].startswith("ab")
