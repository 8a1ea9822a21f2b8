"""Suggestions on a tiny LSTM that has learnt a few sentences: real words, sane probabilities,
one model step per typed character, a bounded cache, and the letters preset and word models."""
import math

import pytest
import torch

from rnnlab.checkpoint import load_checkpoint
from rnnlab.config import MAX_K, ModelConfig, SuggestConfig
from rnnlab.data import Tokenizer
from rnnlab.data.vocab import Vocab
from rnnlab.errors import UsageError
from rnnlab.models import LanguageModel, build_model
from rnnlab.suggest import (INNER_WORD_CHARS, Scheduler, StateCache, SuggestEngine, SuggestRequest, is_word_char,
                            split_partial_word, suggest, visible_word)
from tiny_keyboard_model import WORDS, tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt():
    return load_checkpoint(tiny_checkpoint(), "cpu")


@pytest.fixture
def engine(ckpt):
    return SuggestEngine(ckpt.model, ckpt.tokenizer)


@pytest.mark.parametrize("text, word", [("the time trav", "traveller"), ("we sat in the gar", "garden"),
                                        ("the psy", "psychologist"), ("the traveller came back at din", "dinner")])
def test_completions_are_words_of_the_corpus(engine, text, word):
    s = engine.suggest(text, k=5)
    assert s.mode == "complete" and s.partial == text.split()[-1]
    assert s.completions[0].word == word
    assert s.completions[0].append == word[len(s.partial):]
    assert s.completions[0].prob > 0.5
    # every completion the model believes in is a real word of the corpus
    assert all(c.word in WORDS for c in s.completions if c.prob > 0.05)


def test_probabilities_are_sorted_and_sum_to_at_most_one(engine):
    for text in ["the time trav", "the ", "", "we sat", "the machine."]:
        s = engine.suggest(text, k=8)
        for items in (s.completions, s.next_chars):
            probs = [x.prob for x in items]
            assert probs == sorted(probs, reverse=True)
            assert all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        for c in s.completions:
            assert math.isclose(math.exp(c.logprob), c.prob, rel_tol=1e-9)
        assert len(s.completions) <= 8 and len(s.next_chars) <= 8


def test_next_chars_match_the_model_distribution(ckpt, engine):
    s = engine.suggest("the time trav", k=3)
    ids = ckpt.vocab.encode(list("the time trav"))
    with torch.no_grad():
        logits, _ = ckpt.model(torch.tensor([ids]), ckpt.model.begin_state(1))
    probs = torch.softmax(logits[0, -1], -1)
    top = torch.topk(probs, 3)
    assert [c.text for c in s.next_chars] == [ckpt.vocab.idx_to_token[i] for i in top.indices.tolist()]
    assert [c.prob for c in s.next_chars] == pytest.approx(top.values.tolist(), rel=1e-5)


def test_completion_probability_is_the_chain_of_character_probabilities(ckpt, engine):
    """P(word) = P(each appended character) * P(a boundary after it), computed here by hand."""
    s = engine.suggest("the time trav", k=3)
    c = s.completions[0]
    ids = ckpt.vocab.encode(list("the time trav" + c.append))
    with torch.no_grad():
        logits, _ = ckpt.model(torch.tensor([ids]), ckpt.model.begin_state(1))
    logp = torch.log_softmax(logits[0].double(), -1)  # (T, V)
    n = len(c.append)
    chain = sum(float(logp[-1 - n + j, ids[-n + j]]) for j in range(n))
    boundary = [i for i, t in enumerate(ckpt.vocab.idx_to_token) if len(t) == 1 and not t.isalnum() and t != "'"]
    end = float(torch.logsumexp(logp[-1, boundary], 0))
    assert c.logprob == pytest.approx(chain + end, abs=1e-4)


def test_text_at_a_boundary_asks_for_the_next_word(engine):
    s = engine.suggest("we sat in the ", k=3)
    assert s.mode == "next_word" and s.partial == ""
    assert s.completions[0].word == "garden" and s.completions[0].append == "garden"
    # after punctuation the boundary characters to type before the word come first
    s = engine.suggest("we sat in the garden and talked about time.", k=3)
    assert s.mode == "next_word" and s.completions and s.completions[0].append[0] in " \n"
    assert s.completions[0].word in WORDS


def test_typing_one_more_character_costs_at_most_one_model_step(engine):
    text = "the time traveller smiled"
    first = engine.suggest(text[:5], client="a")
    assert first.context_tokens == 5  # five characters (only the empty text reads the start token)
    steps = [engine.suggest(text[:n], client="a").context_tokens for n in range(6, len(text) + 1)]
    # 0 when the character was one the last completion search tried first (its lookahead)
    assert set(steps) <= {0, 1} and steps.count(0) > len(steps) // 2
    # deleting a character goes back to a cached state: no step at all
    assert engine.suggest(text[:-1], client="a").context_tokens == 0
    # another client has its own cache
    assert engine.suggest(text, client="b").context_tokens == len(text)
    # the empty text is the start token, and its state is no prefix of another text's
    assert engine.suggest("", client="c").context_tokens == 1
    assert engine.suggest("t", client="c").context_tokens == 1
    assert engine.suggest("", client="c").context_tokens == 0


def test_cached_and_fresh_suggestions_agree(ckpt, engine):
    text = "the psychologist looked at the mach"
    for n in range(1, len(text) + 1):
        engine.suggest(text[:n], client="typist")
    cached = engine.suggest(text, client="typist")
    fresh = SuggestEngine(ckpt.model, ckpt.tokenizer).suggest(text)
    assert [c.word for c in cached.completions] == [c.word for c in fresh.completions]
    assert [c.prob for c in cached.completions] == pytest.approx([c.prob for c in fresh.completions], rel=1e-4)


def test_the_state_cache_is_bounded():
    cache = StateCache(max_clients=3, per_client=2)
    entry = object()
    for c in range(5):
        for t in ["a", "ab", "abc"]:
            cache.put(f"client{c}", t, entry)
    assert len(cache) == 3 * 2
    assert cache.longest_prefix("client0", "abcd") == ("", None)  # evicted client
    assert cache.longest_prefix("client4", "abcd")[0] == "abc"
    assert cache.longest_prefix("client4", "a")[0] == ""  # "a" was evicted from its LRU
    with pytest.raises(UsageError):
        StateCache(max_clients=0)


def test_letters_preset_maps_the_text_and_keeps_the_users_case():
    ck = load_checkpoint(tiny_checkpoint(preset="letters"), "cpu")
    eng = SuggestEngine(ck.model, ck.tokenizer)
    assert eng.tokenizer.model_text("The Time-Trav") == "the time trav"
    assert eng.tokenizer.model_text("The machine. ") == "the machine "
    s = eng.suggest("The Time Trav")
    assert s.partial == "Trav" and s.completions[0].word == "Traveller" and s.completions[0].append == "eller"
    s = eng.suggest("The machine,")
    assert s.mode == "next_word" and s.partial == ""


def test_word_models_complete_from_the_vocabulary():
    ck = load_checkpoint(tiny_checkpoint(token="word"), "cpu")
    eng = SuggestEngine(ck.model, ck.tokenizer)
    s = eng.suggest("we sat in the gar", k=3)
    assert s.mode == "complete" and s.completions[0].word == "garden" and s.completions[0].append == "den"
    assert all(c.word.startswith("gar") for c in s.completions)
    assert s.next_chars[0].text == "d"
    s = eng.suggest("we sat in the ", k=3)
    assert s.mode == "next_word" and all(c.word in ck.vocab for c in s.completions)
    probs = [c.prob for c in s.completions]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    # an empty text reads the start token (here the most frequent word): next words after it
    first = eng.suggest("", k=3)
    assert first.mode == "next_word" and len(first.completions) == 3 and all(c.word in ck.vocab for c in first.completions)


def test_split_partial_word():
    assert split_partial_word("the time trav") == ("the time ", "trav")
    assert split_partial_word("said 'don't") == ("said '", "don't")
    assert split_partial_word("end. ") == ("end. ", "")
    assert split_partial_word("") == ("", "")


def test_long_words_are_bounded_and_k_is_checked():
    torch.manual_seed(0)
    vocab = Vocab.build(list("ab "))
    model = build_model(ModelConfig(model="gru", vocab_size=len(vocab), hidden_size=8))
    eng = SuggestEngine(model, Tokenizer(vocab), SuggestConfig(max_word_length=3, beam_width=2))
    s = eng.suggest("ab", k=4)
    assert all(len(c.append) <= 3 for c in s.completions) and s.beam_steps <= 3
    with pytest.raises(UsageError):
        eng.suggest("ab", k=0)
    assert suggest(model, Tokenizer(vocab), "ab", k=2).next_chars  # the one-off function


BATCH_TEXTS = ["the time trav", "we sat in the gar", "the psy", "", "the traveller came back at din", "the ",
               "we sat in the garden and talked about time.", "the mach", "t", "the time traveller smiled at us."]


def _same(a, b):
    assert (a.mode, a.partial, a.model_text, a.context_tokens, a.beam_steps) == \
        (b.mode, b.partial, b.model_text, b.context_tokens, b.beam_steps)
    for xs, ys in ((a.completions, b.completions), (a.next_chars, b.next_chars)):
        assert [getattr(x, "word", getattr(x, "text", None)) for x in xs] == \
            [getattr(y, "word", getattr(y, "text", None)) for y in ys]
        assert [x.prob for x in xs] == pytest.approx([y.prob for y in ys], rel=1e-5, abs=1e-6)


def test_a_batch_answers_as_one_request_at_a_time(ckpt):
    """Cross-request batching changes nothing but the batch the model sees: completions, order,
    probabilities and step counts are those of one-at-a-time requests (max_batch=1)."""
    alone = SuggestEngine(ckpt.model, ckpt.tokenizer, max_batch=1)
    together = SuggestEngine(ckpt.model, ckpt.tokenizer)
    # several typists at different stages: a first request (many context tokens), keystrokes (one
    # each), a cache hit (none) and different k, all in one batch
    for cut in (1, 0, 0):  # first requests, then one more character each, then cache hits
        texts = [t[:len(t) - cut] for t in BATCH_TEXTS]
        requests = [SuggestRequest(t, k=2 + i % 5, client=f"c{i}") for i, t in enumerate(texts)]
        expected = [alone.suggest(r.text, r.k, r.client) for r in requests]
        got = together.suggest_batch(requests)
        assert len(got) == len(requests)
        for a, b in zip(got, expected):
            _same(a, b)


def test_concurrent_callers_share_batches_and_get_their_own_answers(ckpt):
    from concurrent.futures import ThreadPoolExecutor

    engine = SuggestEngine(ckpt.model, ckpt.tokenizer)
    serial = {t: SuggestEngine(ckpt.model, ckpt.tokenizer, max_batch=1).suggest(t, 4) for t in BATCH_TEXTS}
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: (BATCH_TEXTS[i % len(BATCH_TEXTS)],
                                       engine.suggest(BATCH_TEXTS[i % len(BATCH_TEXTS)], 4, client=f"c{i % 3}")),
                            range(60)))
    for text, s in got:
        assert [c.word for c in s.completions] == [c.word for c in serial[text].completions]
        assert [c.prob for c in s.completions] == pytest.approx([c.prob for c in serial[text].completions],
                                                                rel=1e-5, abs=1e-6)


def test_a_bad_request_fails_alone_and_a_model_error_reaches_every_caller(ckpt):
    engine = SuggestEngine(ckpt.model, ckpt.tokenizer)
    good, bad = engine.submit("the psy", 3), None
    with pytest.raises(UsageError):
        bad = engine.submit("the psy", k=0)
    assert bad is None and good.result(timeout=30).completions[0].word == "psychologist"
    # k is checked in suggest_batch too, per request
    from concurrent.futures import Future

    scheduler, f_bad, f_good = Scheduler(engine), Future(), Future()
    scheduler.admit(SuggestRequest("the", k=MAX_K + 1), f_bad)
    scheduler.admit(SuggestRequest("the", k=2), f_good)
    while scheduler.in_flight:
        scheduler.step()
    assert isinstance(f_bad.exception(), UsageError) and len(f_good.result().next_chars) == 2

    class Broken(LanguageModel):
        device = torch.device("cpu")

        def begin_state(self, batch_size, device=None):
            return (torch.zeros(1, batch_size, 4),)

        def forward(self, tokens, state):
            raise RuntimeError("model exploded")

    broken = SuggestEngine(Broken(), ckpt.tokenizer)
    futures = [broken.submit(t, 3, client=f"c{i}") for i, t in enumerate(["a", "the", "we s"])]
    for f in futures:
        with pytest.raises(RuntimeError, match="model exploded"):
            f.result(timeout=30)
    with pytest.raises(UsageError):
        SuggestEngine(ckpt.model, ckpt.tokenizer, max_batch=0)


@pytest.mark.parametrize("cell, impl, layers, emb", [("lstm", "concise", 1, 0), ("lstm", "scratch", 2, 6),
                                                     ("gru", "concise", 2, 0), ("gru", "fast", 1, 5),
                                                     ("rnn", "concise", 1, 0), ("rnn", "scratch", 2, 4)])
def test_the_models_specialised_step_is_its_forward(cell, impl, layers, emb):
    """``RNNLM.step`` (lookup table, transposed weights, the cell's inference step) gives the logits
    and state of ``model.forward`` for every cell, implementation, depth and input kind."""

    torch.manual_seed(0)
    cfg = ModelConfig(model=cell, impl=impl, vocab_size=11, hidden_size=12, num_layers=layers, embedding_dim=emb,
                      activation="relu" if (cell == "rnn" and impl == "scratch") else "tanh",
                      init="torch")
    model = build_model(cfg).eval()
    assert model.cell.has_inference_step
    ids = torch.tensor([0, 3, 10, 3, 7])
    state = tuple(torch.randn_like(s) for s in model.begin_state(5))
    with torch.inference_mode():
        step_logits, new_state = model.step(ids, state)
        logits, ref_state = model(ids[:, None], state)
    assert torch.allclose(step_logits, logits[:, -1], atol=1e-5)
    assert len(new_state) == len(ref_state)
    for a, b in zip(new_state, ref_state):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


class Wrapped(LanguageModel):
    """A model with the contract's default one-token ``step`` (a one-token ``forward``)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    @property
    def device(self):
        return self.inner.device

    def begin_state(self, batch_size, device=None):
        return self.inner.begin_state(batch_size, device)

    def forward(self, tokens, state):
        return self.inner(tokens, state)


def test_a_model_with_the_default_step_suggests_the_same(ckpt):
    """A model with only the contract's default ``step`` (here a wrapper) gets the suggestions of
    the model's own specialised step."""
    generic = SuggestEngine(Wrapped(ckpt.model), ckpt.tokenizer)
    fast = SuggestEngine(ckpt.model, ckpt.tokenizer)
    for i, text in enumerate(BATCH_TEXTS):
        _same(generic.suggest(text, k=2 + i % 5), fast.suggest(text, k=2 + i % 5))


def test_batched_search_matches_a_plain_beam_search(ckpt):
    """The batched search (one padded top-k for all jobs) against a direct, one-beam-at-a-time
    beam search written from the definition, on requests of different k in one batch."""
    engine = SuggestEngine(ckpt.model, ckpt.tokenizer)
    vocab, model = ckpt.vocab, ckpt.model
    toks = vocab.idx_to_token

    single = [len(t) == 1 and i != vocab.unk_id for i, t in enumerate(toks)]
    word_start = [sg and is_word_char(t) for sg, t in zip(single, toks)]
    word_continue = [ws or (sg and t in INNER_WORD_CHARS) for ws, sg, t in zip(word_start, single, toks)]
    boundary = [sg and not wc for sg, wc in zip(single, word_continue)]
    leading = [sg and not ws for sg, ws in zip(single, word_start)]

    def logprobs_after(text, app=""):
        # the empty text is the start token (its completions continue from there)
        ids = vocab.encode(list(text + app)) if text else ckpt.tokenizer.start_ids() + vocab.encode(list(app))
        with torch.no_grad():
            logits, _ = model(torch.tensor([ids]), model.begin_state(1))
        return torch.log_softmax(logits[0, -1].double(), -1).tolist()

    def plain(text, k):
        started = bool(split_partial_word(text)[1])
        width = k if started else 2 * k
        beam_w = max(engine.beam_width, width)
        beams, finished = [("", 0.0, started)], []
        for depth in range(engine.max_word_length + 1):
            dists = [logprobs_after(text, app) for app, _, _ in beams]
            for (app, lp, st), d in zip(beams, dists):
                if st:
                    finished.append((app, lp + math.log(sum(math.exp(d[i]) for i, t in enumerate(toks)
                                                            if boundary[i]))))
            finished = sorted(finished, key=lambda f: -f[1])[:width]
            if depth == engine.max_word_length:
                break
            floor = finished[-1][1] if len(finished) >= width else -math.inf
            cand = []
            for (app, lp, st), d in zip(beams, dists):
                for i, t in enumerate(toks):
                    ok = word_continue[i] if st else (word_start[i] or (depth < 3 and leading[i]))
                    if ok and lp + d[i] > floor:
                        cand.append((app + t, lp + d[i], st or word_start[i]))
            beams = sorted(cand, key=lambda b: -b[1])[:beam_w]
            if not beams:
                break
        return finished

    requests = [SuggestRequest(t, k=1 + i % 4, client=f"p{i}") for i, t in enumerate(BATCH_TEXTS[:6])]
    for r, s in zip(requests, engine.suggest_batch(requests)):
        ref, seen = [], set()
        for app, lp in plain(r.text, r.k):  # one completion per visible word, the best first
            word = visible_word(s.partial, app)
            if word not in seen and len(ref) < r.k:
                seen.add(word)
                ref.append((app, lp))
        assert [c.append for c in s.completions] == [a for a, _ in ref]
        assert [c.logprob for c in s.completions] == pytest.approx([lp for _, lp in ref], abs=1e-4)


def test_a_character_the_search_tried_first_needs_no_model_step(ckpt, engine):
    """The first beams of a completion search are the text plus one character: their states are
    kept (one lookahead per client), so typing that character is a cache hit with the same answer."""
    s = engine.suggest("the time trav", client="a")
    nxt = s.completions[0].append[0]
    typed = engine.suggest("the time trav" + nxt, client="a")
    assert typed.context_tokens == 0
    fresh = SuggestEngine(ckpt.model, ckpt.tokenizer).suggest("the time trav" + nxt)
    assert fresh.context_tokens > 0
    typed.context_tokens = fresh.context_tokens
    _same(typed, fresh)
    # deleting it goes back to the LRU; a character the search did not try costs one step
    assert engine.suggest("the time trav", client="a").context_tokens == 0
    assert engine.suggest("the time trav7", client="a").context_tokens == 1
    # the lookahead is per client and per text: another client, or a text the lookahead is not of
    assert engine.suggest("the time trav" + nxt, client="b").context_tokens == 14
    nxt = engine.suggest("we sa", client="c").completions[0].append[0]
    assert engine.suggest("we sa" + nxt + "7", client="c").context_tokens == 1  # from the lookahead's state
    assert engine.suggest("we sa" + nxt + "77", client="c").context_tokens == 1  # the lookahead is of "we sa" only


def test_an_error_in_a_batched_step_reaches_every_waiting_caller(ckpt):
    """A model that fails only in the one-token steps of the search (not while reading the context)
    must fail the requests that step was carrying, not leave them waiting forever."""

    class FailsInSteps(Wrapped):
        def forward(self, tokens, state):
            if tokens.shape[1] == 1:
                raise RuntimeError("step exploded")
            return self.inner(tokens, state)

    engine = SuggestEngine(FailsInSteps(ckpt.model), ckpt.tokenizer)
    futures = [engine.submit(t, 3, client=f"c{i}") for i, t in enumerate(["the psy", "we sat in the gar"])]
    for f in futures:
        with pytest.raises(RuntimeError, match="step exploded"):
            f.result(timeout=30)
    with pytest.raises(RuntimeError, match="step exploded"):
        engine.suggest_batch([SuggestRequest("the mach", 2)])


def test_the_unrolled_model_suggests_in_batches_too(ckpt):
    """The AWS post's many-to-one model keeps its window in the contract's (L, B, ...) layout, so
    the scheduler batches it like a recurrent state, with the answers of one request at a time."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="unrolled", vocab_size=len(ckpt.vocab), hidden_size=16, window=3)).eval()
    alone = SuggestEngine(model, ckpt.tokenizer, max_batch=1)
    together = SuggestEngine(model, ckpt.tokenizer)
    requests = [SuggestRequest(t, k=3, client=f"c{i}") for i, t in enumerate(BATCH_TEXTS[:6])]
    expected = [alone.suggest(r.text, r.k, r.client) for r in requests]
    for a, b in zip(together.suggest_batch(requests), expected):
        _same(a, b)
    assert all(len(s.next_chars) == 3 for s in expected)
