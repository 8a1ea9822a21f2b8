"""The one decoder: greedy equals the book's predict_ch8, logit filters, seeds, <unk> suppression,
the empty-prompt rule, and extreme but valid settings."""
import pytest
import torch

from rnnlab.config import GenerateConfig, ModelConfig
from rnnlab.data import Tokenizer
from rnnlab.data.vocab import Vocab
from rnnlab.decoding import TopK, TopP, Temperature, decode, generate, generate_ids, generate_text, token_picker
from rnnlab.errors import RnnlabError, UsageError
from rnnlab.models import build_model


def _setup(impl="concise"):
    torch.manual_seed(0)
    vocab = Vocab.build(list("the time traveller\n"))
    model = build_model(ModelConfig(model="gru", impl=impl, vocab_size=len(vocab), hidden_size=16))
    return model, Tokenizer(vocab)


def _ids(model, prefix, length, generator=None, suppress=(), **kw):
    return generate_ids(model, prefix, GenerateConfig(length=length, **kw), generator, suppress)


def test_greedy_generation_equals_stepping_the_model_by_hand():
    model, tok = _setup()
    prefix = tok.vocab.encode(list("time"))
    got = _ids(model, prefix, 12)[0].tolist()
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


@pytest.mark.parametrize("impl", ["scratch", "concise", "fast"])
def test_the_stream_and_the_batch_give_the_same_tokens(impl):
    model, tok = _setup(impl)
    prefix = tok.vocab.encode(list("the "))
    for cfg in (GenerateConfig(length=25), GenerateConfig(length=25, temperature=0.8, top_k=5, top_p=0.9)):
        a = _ids(model, prefix, cfg.length, torch.Generator().manual_seed(3), temperature=cfg.temperature,
                 top_k=cfg.top_k, top_p=cfg.top_p)[0].tolist()
        b = [int(t[0]) for t in decode(model, prefix, cfg, torch.Generator().manual_seed(3))]
        assert a == b


def test_generate_returns_prefix_plus_length_tokens():
    model, tok = _setup()
    text = generate(model, tok, "time ", 20)
    ids = _ids(model, tok.vocab.encode(list("time ")), 20, suppress=[tok.vocab.unk_id])[0].tolist()
    assert text == "time " + tok.decode(ids) and len(ids) == 20


def test_temperature_zero_and_top_k_one_are_greedy():
    logits = torch.randn(4, 30)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(token_picker(GenerateConfig(temperature=0.0))(logits), logits.argmax(-1))
    assert torch.equal(token_picker(GenerateConfig(temperature=1.0, top_k=1), generator=g)(logits), logits.argmax(-1))


def test_top_k_and_top_p_keep_the_right_sets():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isfinite(TopK(2)(logits)).tolist() == [[True, True, False, False, False]]
    # top-p keeps the smallest prefix of the ranking whose mass reaches p
    assert torch.isfinite(TopP(0.5)(logits)).tolist() == [[True, False, False, False, False]]
    assert torch.isfinite(TopP(0.65)(logits)).tolist() == [[True, True, False, False, False]]
    assert torch.isfinite(TopP(0.71)(logits)).tolist() == [[True, True, True, False, False]]


def test_tiny_temperature_and_tiny_top_p_are_valid_and_act_greedily():
    """1e-300 is a valid temperature and top-p: no inf - inf, no empty nucleus."""
    logits = torch.tensor([[2.0, 5.0, 1.0, 4.9]])
    assert torch.isfinite(TopP(1e-300)(logits)).tolist() == [[False, True, False, False]]
    scaled = Temperature(1e-300)(logits)
    assert not torch.isnan(scaled).any() and int(scaled.argmax()) == 1
    g = torch.Generator().manual_seed(0)
    for cfg in (GenerateConfig(temperature=1e-300), GenerateConfig(temperature=1.0, top_p=1e-300),
                GenerateConfig(temperature=100.0, top_k=2)):
        ids = token_picker(cfg, generator=g)(logits.repeat(20, 1))
        assert ids.shape == (20,) and set(ids.tolist()) <= ({1} if cfg.temperature < 1 or cfg.top_p < 1 else {1, 3})
    model, tok = _setup()
    assert len(generate_text(model, tok, "the", GenerateConfig(length=10, temperature=1e-300))[0]) == 13


@pytest.mark.parametrize("bad", [dict(temperature=1e300), dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5),
                                 dict(length=-1), dict(num_samples=0), dict(seed=2**64), dict(temperature=float("nan"))])
def test_out_of_range_settings_are_usage_errors_in_the_library_too(bad):
    model, tok = _setup()
    with pytest.raises(UsageError):
        generate_text(model, tok, "the", GenerateConfig(**bad))


def test_seeded_sampling_repeats_and_batches_differ():
    model, tok = _setup()
    ids = tok.vocab.encode(list("the"))
    a = _ids(model, ids, 30, torch.Generator().manual_seed(1), temperature=1.0, num_samples=4)
    b = _ids(model, ids, 30, torch.Generator().manual_seed(1), temperature=1.0, num_samples=4)
    assert torch.equal(a, b) and a.shape == (4, 30)
    assert len({tuple(r) for r in a.tolist()}) > 1


def test_unk_is_never_generated():
    model, tok = _setup()
    vocab = tok.vocab
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[vocab.unk_id] = 100.0  # the model would always pick <unk>
    text = generate(model, tok, "the ", 15)
    assert "<unk>" not in text and len(text) == len("the ") + 15
    sampled = generate_text(model, tok, "the", GenerateConfig(length=15, temperature=1.0, num_samples=3),
                            torch.Generator().manual_seed(0))
    assert all("<unk>" not in t for t in sampled)
    assert _ids(model, vocab.encode(list("the")), 5)[0].tolist() == [vocab.unk_id] * 5  # no suppress asked


def test_an_empty_prompt_reads_the_start_token_and_is_not_part_of_the_output():
    model, tok = _setup()
    p = tok.encode_prompt("")
    assert p.at_start and p.ids == tok.vocab.encode(["\n"])
    text = generate_text(model, tok, "", GenerateConfig(length=12))[0]
    start = _ids(model, tok.vocab.encode(["\n"]), 12, suppress=tok.suppressed_ids())[0].tolist()
    assert text == tok.decode(start) and len(text) == 12
    words = Tokenizer(Vocab.build("a b a c a".split(), separator=" "), token="word")
    assert words.encode_prompt("").ids == words.vocab.encode(["a"])  # no line break or space: the most frequent


def test_prefix_with_unseen_tokens_and_no_unk_explains():
    vocab = Vocab.build(list("abc "), unk=None)
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="rnn", vocab_size=len(vocab), hidden_size=8))
    tok = Tokenizer(vocab)
    with pytest.raises(RnnlabError, match="has no <unk>; remove them"):
        generate_text(model, tok, "abz", GenerateConfig(length=5))
    assert generate_text(model, tok, "ab", GenerateConfig(length=5))[0].startswith("ab")
