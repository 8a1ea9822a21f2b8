"""The word search (rnnlab.suggest: words, recent, mix, wordsearch, store): the Kneser-Ney n-gram and
the recent-word cache by hand, the mixing formula by hand, exact character-model scores, the bound
that prunes, and the saved word model's round trip."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from rnnlab.checkpoint import load_checkpoint
from rnnlab.errors import RnnlabError
from rnnlab.suggest import (MixParams, RecentWords, SuggestEngine, SuggestRequest, WordModel, Words, find_words,
                            load_engine, load_words, save_words, words_of)
from rnnlab.suggest.mix import NO_RANK, candidates, mix_score, selected, word_query
from rnnlab.suggest.store import text_settings
from rnnlab.suggest.words import BOS, last_words
from tiny_keyboard_model import CORPUS, tiny_checkpoint


# -- the n-gram, by hand ------------------------------------------------------------------------------

def test_trigram_probabilities_by_hand():
    # "a b a b a c" after two start symbols: trigrams <s><s>a, <s>ab, aba x2, bab, bac
    m = WordModel.from_words("a b a b a c".split(), order=3)
    assert m.vocab == ["a", "b", "c"] and m.counts.tolist() == [3, 2, 1]
    # order 3 (raw counts): n1 = 4 (<s><s>a, <s>ab, bab, bac), n2 = 1 (aba) -> D3 = 4 / 6
    # order 2 (continuation counts N1+(. v w)): <s>a 1, ab 2 (after <s> and b), ba 1, ac 1 -> D2 = 3 / 5
    # order 1: N1+(. w): a 2 (after <s> and b), b 1, c 1 -> 1/2, 1/4, 1/4
    assert [lv.discount for lv in m.levels] == [pytest.approx(3 / 5), pytest.approx(2 / 3)]
    assert m.p1.tolist() == [0.5, 0.25, 0.25]
    # P2(. | a): S = 3 (b 2, c 1), T = 2, backoff 0.6 * 2 / 3 = 0.4
    p2_a = {"a": 0.4 * 0.5, "b": (2 - 0.6) / 3 + 0.4 * 0.25, "c": (1 - 0.6) / 3 + 0.4 * 0.25}
    # P3(. | b a): S = 2 (b 1, c 1), T = 2, backoff (2/3) * 2 / 2 = 2/3
    p3_ba = {"a": 2 / 3 * p2_a["a"], "b": (1 - 2 / 3) / 2 + 2 / 3 * p2_a["b"], "c": (1 - 2 / 3) / 2 + 2 / 3 * p2_a["c"]}
    assert p3_ba == pytest.approx({"a": 0.133333, "b": 0.544444, "c": 0.322222}, abs=1e-6)
    for w, p in p3_ba.items():
        assert m.prob(w, "so, b a ") == pytest.approx(p)
    # P2(a | b) = (1 - 0.6) / 1 + 0.6 * 0.5 = 0.7; P3(a | a b): S = 2 (a 2), T = 1: (2 - 2/3) / 2 + 1/3 * 0.7 = 0.9
    assert m.prob("a", "a b ") == pytest.approx(0.9)
    assert m.prob("b", "a b ") == pytest.approx(1 / 3 * 0.15)
    # the text's start: P3(a | <s> <s>) = (1 - 2/3) + 2/3 * P2(a | <s>) = 1/3 + 2/3 * 0.7
    assert m.prob("a", "") == pytest.approx(0.8)
    # an unseen history backs off: (c a) was never seen -> P2(. | a); a word outside the lexicon -> P1
    assert m.prob("c", "c a ") == pytest.approx(p2_a["c"]) and m.prob("c", "zz a ") == pytest.approx(p2_a["c"])
    assert m.prob("b", "a zz ") == pytest.approx(0.25) and m.prob("zz", "a b ") == 0.0
    hist = m.history("b a ")
    assert hist == (1, 0)
    assert m.top(hist, "", 3) == (("b", pytest.approx(0.544444, abs=1e-6)), ("c", pytest.approx(0.322222, abs=1e-6)),
                                  ("a", pytest.approx(0.133333, abs=1e-6)))
    assert m.prefix_mass(hist, "b") == pytest.approx(p3_ba["b"]) and m.prefix_mass(hist, "") == pytest.approx(1.0)
    assert m.top(hist, "q", 3) == () and m.prefix_mass(hist, "q") == 0.0


def test_bigram_is_the_order_2_model_by_hand():
    # a b a b a c: bigrams <s>a, ab x2, ba x2, ac; Ney's discount from n1 = 2, n2 = 2 -> 1/3; here given 0.5 by hand
    m = WordModel.from_words("a b a b a c".split(), order=2)
    assert m.levels[0].discount == pytest.approx(1 / 3)
    D = 1 / 3
    # P_low: continuation counts a 2 (<s>, b), b 1, c 1
    assert m.p1.tolist() == [0.5, 0.25, 0.25]
    assert m.prob("b", "a ") == pytest.approx((2 - D) / 3 + D * 2 / 3 * 0.25)
    assert m.prob("a", "a ") == pytest.approx(D * 2 / 3 * 0.5)
    assert sum(m.prob(w, "a ") for w in "abc") == pytest.approx(1.0)
    unigram = WordModel.from_words("a b a b a c".split(), order=1)
    assert unigram.prob("a", "b ") == pytest.approx(0.5) and unigram.prob("c") == pytest.approx(1 / 6)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_sum_to_one_and_top_is_the_best_by_brute_force(order):
    m = WordModel.from_text(CORPUS + "The time, the traveller's machine: we'd sat.\n", order)
    every = np.arange(len(m))
    for context in ["", "the time ", "we sat in the ", "zz the ", "the zz ", "The "]:
        h = m.history(context)
        p = m.probs(every, h)
        assert p.sum() == pytest.approx(1.0) and (p > 0).all()
        for prefix in ["", "t", "th", "ma", "we'", "q"]:
            ids = [i for i, w in enumerate(m.vocab) if w.startswith(prefix)]
            assert m.prefix_mass(h, prefix) == pytest.approx(float(p[ids].sum()))
            brute = sorted(ids, key=lambda i: (-p[i], -m.counts[i], m.vocab[i]))[:4]
            assert [w for w, _ in m.top(h, prefix, 4)] == [m.vocab[i] for i in brute]


def test_a_memoised_distribution_cannot_be_changed_by_a_caller():
    m = WordModel.from_text(CORPUS, 3)
    h = m.history("the time ")
    before = m.probs(np.arange(len(m)), h)
    before[:] = 0.0  # a caller's copy
    with pytest.raises(ValueError):
        m.dist(h)[0] = 1.0  # the shared one is read-only
    assert m.probs(np.arange(len(m)), h).sum() == pytest.approx(1.0)
    assert m.dist(m.history("")) is not m.p1 and m.p1.flags.writeable  # the unigram stays the model's own


def test_history_words_follow_the_keyboard_rules():
    assert last_words("so, we'd  sat!  ", 2) == ["we'd", "sat"]
    assert last_words("one", 2) == ["one"] and last_words("", 2) == [] and last_words("a b c", 0) == []
    long = "x" * 5000 + " end of it "
    assert last_words(long, 3) == ["end", "of", "it"]
    m = WordModel.from_words(["a", "b"], 3)
    assert m.history("") == (m.bos, m.bos) and m.history("b ") == (m.bos, 1) and m.history("q a ") == (-1, 0)


# -- the recent-word cache, by hand -----------------------------------------------------------------

def test_recent_words_by_hand():
    rw = RecentWords(per_client=4, max_clients=2)
    assert rw.words("the cat sat", "c1") == ["the", "cat"]  # the word being typed is not a recent word yet
    assert rw.words("the cat sat on", "c1") == ["the", "cat", "sat"]  # typed on: only the new part is read
    assert rw.words("the cat s", "c1") == ["the", "cat"]  # a backspace: "sat" is gone, and never kept
    assert rw.words("the cat sits down", "c1") == ["the", "cat", "sits"]
    # another text (a new message): the old one's words are kept as history, the newest last, 4 at most
    assert rw.words("hello wor", "c1") == ["the", "cat", "sits", "hello"]
    assert rw.words("hello world and more", "c1") == ["sits", "hello", "world", "and"]
    # anonymous requests read their own text only, and leave nothing behind
    assert rw.words("a b c d e f", "") == ["b", "c", "d", "e"] and rw.words("z", "") == []
    # at most two clients: the least recently seen goes, with its history
    rw.words("x ", "c2")
    rw.words("y ", "c3")
    assert rw.clients() == 2 and rw.words("new ", "c1") == ["new"]
    # a text that shares only part of a word with the last one: the old word counts as the old text's
    rw = RecentWords()
    rw.words("I like cats ", "c")
    assert rw.words("I like cat food x", "c") == ["cats", "I", "like", "cat", "food"]


# -- the mixing, by hand ------------------------------------------------------------------------------

def test_mix_score_by_hand_one_candidate_and_many():
    p = MixParams(char_weight=0.5, ngram_weight=0.3, cache_weight=0.2, oov_factor=0.25, next_char_weight=0.1,
                  next_ngram_weight=0.6, next_cache_weight=0.3)
    # inside a word, in the lexicon: (0.5 * 0.2 / 0.8 + 0.3 * 0.1 / 0.5 + 0.2 * 2 / 4) / 1
    assert mix_score(p, math.log(0.2), 0.1, 2, 1, 0.8, 0.5, 4, True) == pytest.approx(0.125 + 0.06 + 0.1)
    # outside it: its n-gram probability is 0 and the factor applies: (0.5 * 0.4 / 0.8 + 0.2 * 1 / 4) * 0.25
    assert mix_score(p, math.log(0.4), 0.0, 1, 0, 0.8, 0.5, 4, True) == pytest.approx((0.25 + 0.05) * 0.25)
    # no recent word starts with the typed part: its weight goes to the others, (0.125 + 0.06) / 0.8
    assert mix_score(p, math.log(0.2), 0.1, 0, 1, 0.8, 0.5, 0, True) == pytest.approx(0.185 / 0.8)
    # nor any lexicon word: the character model alone, (0.125) / 0.5; a word never reached scores 0
    assert mix_score(p, math.log(0.2), 0.0, 0, 1, 0.8, 0.0, 0, True) == pytest.approx(0.25)
    assert mix_score(p, -math.inf, 0.0, 0, 0, 1.0, 0.0, 0, True) == 0.0
    # at a word start, the other weights: 0.1 * 0.2 / 1 + 0.6 * 0.1 / 1 + 0.3 * 2 / 4
    assert mix_score(p, math.log(0.2), 0.1, 2, 1, 1.0, 1.0, 4, False) == pytest.approx(0.02 + 0.06 + 0.15)
    # the same formula over arrays (the tuning's), elementwise, each row with its own weights
    many = mix_score(p, np.log([[0.2, 0.4], [0.2, 0.4]]), np.array([[0.1, 0.0], [0.1, 0.0]]),
                     np.array([[2, 1], [2, 1]]), np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[0.8], [1.0]]),
                     np.array([[0.5], [1.0]]), np.array([[4], [4]]), np.array([[1.0], [0.0]]), exp=np.exp)
    assert many.tolist() == [[pytest.approx(0.285), pytest.approx(0.075)],
                             [pytest.approx(0.23), pytest.approx((0.04 + 0.075) * 0.25)]]
    assert selected(p, 3, NO_RANK, NO_RANK, True) and not selected(MixParams(beam_k=3), 3, 20, 5, True)
    assert selected(MixParams(beam_k=3), np.array([2, 3]), np.array([NO_RANK, 1]), np.array([9, 9]),
                    True).tolist() == [True, True]
    # without the character model (its weight 0) the beam proposes nothing
    no_nn = MixParams(next_char_weight=0.0)
    assert not selected(no_nn, 0, NO_RANK, NO_RANK, False) and selected(no_nn, 0, NO_RANK, NO_RANK, True)
    assert selected(no_nn, np.array([[0, 0]]), np.array([[NO_RANK, 0]]), np.array([[NO_RANK, NO_RANK]]),
                    np.array([[0.0]])).tolist() == [[False, True]]


def test_cache_candidates_and_the_typed_part_by_hand():
    m = WordModel.from_text("the cat sat on the mat")
    p = MixParams(char_weight=0.0, ngram_weight=0.5, cache_weight=0.5, next_char_weight=0.0, next_ngram_weight=0.5,
                  next_cache_weight=0.5, oov_factor=0.5, beam_k=0, lexicon_k=5, cache_k=5)
    # no lexicon word starts with "zo": the n-gram's weight goes to the cache; the typed "zo" is never a
    # candidate and its occurrence does not count: zoo 2 / 3, zoom 1 / 3, both outside the lexicon (x 0.5)
    q = word_query(m, "zoo zoom zoo zo ", "zo", ["zoo", "zoom", "zoo", "zo"], p)
    assert q.ng_mass == 0 and q.n_cache == 3 and q.cache_order == ["zoo", "zoom"]
    ranked = candidates(m, q, [], {}, -math.inf).rank(p, 5)
    assert [(w, s) for w, _, s in ranked] == [("zoo", pytest.approx(2 / 3 * 0.5)), ("zoom", pytest.approx(1 / 3 * 0.5))]
    # both terms: after "the", "mat" and "cat" by the n-gram (mass 1 over the lexicon) and "cat" twice in the cache
    q = word_query(m, "the cat and the cat and the ", "", ["the", "cat", "and", "the", "cat", "and", "the"], p)
    got = dict((w, s) for w, _, s in candidates(m, q, [], {}, -math.inf).rank(p, 10))
    for w in ("cat", "mat", "the", "and"):
        expected = (0.5 * m.prob(w, "the cat and the ") + 0.5 * q.cache.get(w, 0) / 7) * (0.5 if w == "and" else 1)
        assert got[w] == pytest.approx(expected)


# -- the word search on the tiny model ----------------------------------------------------------------

@pytest.fixture(scope="module")
def ck():
    return load_checkpoint(tiny_checkpoint(), "cpu")


def _log_p_word(ck, text, append):
    """log P(append, then any boundary | text) by running the model over the whole text."""
    ids = ck.vocab.encode(list(text + append))
    with torch.no_grad():
        logits, _ = ck.model(torch.tensor([ids]), ck.model.begin_state(1))
    lp = torch.log_softmax(logits[0].double(), -1)  # (T, V)
    n = len(append)
    chain = sum(float(lp[len(text) - 1 + j, ids[len(text) + j]]) for j in range(n))
    boundary = [i for i, t in enumerate(ck.vocab.idx_to_token) if len(t) == 1 and not t.isalnum() and t != "'"]
    return chain + float(torch.logsumexp(lp[len(text) - 1 + n, boundary], 0))


def test_every_candidate_is_scored_exactly_by_the_character_model(ck):
    words = Words(WordModel.from_text(CORPUS + "the garret. the psyche. the tram.\n"))
    engine = SuggestEngine(ck.model, ck.tokenizer, words=words)
    engine.collect = True  # every candidate scored to its end, its features kept
    for text in ["we sat in the ga", "the time tr", "the psy"]:
        s = engine.suggest_batch([SuggestRequest(text, 5)])[0]
        f = s.features
        partial = text.split(" ")[-1]
        assert partial not in f.words and all(w.startswith(partial) for w in f.words)
        scored = [(w, lp) for w, lp, r in zip(f.words, f.lp_nn, f.ng_rank) if r < 1000]  # the n-gram's candidates
        assert len(scored) >= 2
        for w, lp in scored:
            assert lp == pytest.approx(_log_p_word(ck, text, w[len(partial):]), abs=1e-4), w
        # the typed part as a whole word normalises the character model's term
        if partial:
            assert f.nn_norm == pytest.approx(1 - math.exp(_log_p_word(ck, text, "")), abs=1e-6)


@pytest.mark.parametrize("params", [MixParams(), MixParams(char_weight=0.9, ngram_weight=0.05, cache_weight=0.05,
                                                           beam_k=2, lexicon_k=40, cache_k=10),
                                    MixParams(char_weight=0.2, ngram_weight=0.8, cache_weight=0.0, beam_k=0,
                                              lexicon_k=10, cache_k=0)])
def test_the_bound_prunes_nothing_that_would_be_shown(ck, params):
    words = Words(WordModel.from_text(CORPUS), params)
    pruned = SuggestEngine(ck.model, ck.tokenizer, words=words)
    full = SuggestEngine(ck.model, ck.tokenizer, words=words)
    full.collect = True
    texts = ["", "the ", "the t", "the time trav", "we sat in the ", "the psy", "at dinner time. the tr", "zz q"]
    for k in (1, 3, 5):
        a = pruned.suggest_batch([SuggestRequest(t, k) for t in texts])
        b = full.suggest_batch([SuggestRequest(t, k) for t in texts])
        for t, x, y in zip(texts, a, b):
            assert [c.word for c in x.completions] == [c.word for c in y.completions], (t, k)
            assert [c.prob for c in x.completions] == pytest.approx([c.prob for c in y.completions], rel=1e-5)


def test_the_typed_part_is_never_shown_and_probabilities_are_scores(ck):
    engine = load_engine(tiny_checkpoint())
    assert engine.words is not None
    for text in ["the time", "the time trav", "we sat in the garden", "the", "t"]:
        s = engine.suggest_batch([SuggestRequest(text, 5)])[0]
        partial = text.split(" ")[-1]
        assert partial not in [c.word for c in s.completions]
        assert all(c.word.startswith(partial) and c.word == partial + c.append for c in s.completions)
        probs = [c.prob for c in s.completions]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    s = engine.suggest_batch([SuggestRequest("we sat in the gar", 3)])[0]
    assert s.completions[0].word == "garden"


def test_the_recent_words_are_candidates_for_their_client_only(ck):
    engine = load_engine(tiny_checkpoint())
    engine.suggest_batch([SuggestRequest("the zeppelin smiled at us. ", 5, "a")])
    a = engine.suggest_batch([SuggestRequest("we sat in the z", 20, "a")])[0]  # a new text of client a
    b = engine.suggest_batch([SuggestRequest("we sat in the z", 20, "b")])[0]
    assert "zeppelin" in [c.word for c in a.completions]
    assert "zeppelin" not in [c.word for c in b.completions]
    off = SuggestEngine(ck.model, ck.tokenizer, words=engine.words)
    assert off.recent is not None
    from rnnlab.config import SuggestConfig

    assert SuggestEngine(ck.model, ck.tokenizer, SuggestConfig(recent_words=0), words=engine.words).recent is None
    assert SuggestEngine(ck.model, ck.tokenizer, SuggestConfig(words="off"), words=engine.words).words is None


# -- the saved word model -------------------------------------------------------------------------

def test_saved_word_model_round_trip(tmp_path, ck):
    model = WordModel.from_text(CORPUS + "O'Brien's café — naïve.\n")
    params = MixParams(char_weight=0.7, ngram_weight=0.2, cache_weight=0.1, oov_factor=0.1, beam_k=2, lexicon_k=7,
                       cache_k=3)
    meta = {"data": text_settings(ck.data_config), "tuning": {"words": 12}}
    baseline = MixParams(char_weight=0.0, next_char_weight=0.0, beam_k=0, next_cache_weight=0.4)
    save_words(tmp_path, Words(model, params, baseline, meta))
    back = load_words(tmp_path)
    assert back.model.vocab == model.vocab and back.model.order == 3 and (back.model.grams == model.grams).all()
    assert back.params == params and back.baseline == baseline and back.meta == meta
    every = np.arange(len(model))
    for context in ["", "the time ", "O'Brien's "]:
        assert back.model.probs(every, back.model.history(context)).tolist() == \
            model.probs(every, model.history(context)).tolist()
    assert "café" in back.model and "naïve" in back.model
    # the word model of a checkpoint is found beside it, or in its run directory above best/
    assert find_words(tmp_path, ck.data_config) is not None
    (tmp_path / "best").mkdir()
    assert find_words(tmp_path / "best", ck.data_config).params == params
    other = dataclasses.replace(ck.data_config, val_fraction=0.2)
    assert find_words(tmp_path / "best", other) is None
    with pytest.raises(RnnlabError, match="other text settings"):
        find_words(tmp_path, other)


def test_a_damaged_word_model_is_one_line(tmp_path):
    save_words(tmp_path, Words(WordModel.from_text(CORPUS)))
    good = json.loads((tmp_path / "words.json").read_text())
    for change, match in [({"save_id": "x"}, "different saves"), ({"order": 7}, "order or vocabulary"),
                          ({"vocab": ["b", "a"]}, "order or vocabulary"), ({"format": "other"}, "not an rnnlab")]:
        (tmp_path / "words.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(RnnlabError, match=match) as e:
            load_words(tmp_path)
        assert "\n" not in str(e.value) and "rnnlab words" in str(e.value)
    (tmp_path / "words.json").write_text(json.dumps(good))
    (tmp_path / "words.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(RnnlabError, match="cannot read the word counts"):
        load_words(tmp_path)
    (tmp_path / "words.json").write_text("{")
    with pytest.raises(RnnlabError, match="not valid JSON"):
        load_words(tmp_path)
