import pytest

from rnnlab.data.vocab import UNK, Vocab
from rnnlab.errors import RnnlabError


def test_frequency_order_with_first_occurrence_tie_break():
    v = Vocab.build(list("abcbcaddd"))  # counts a2 b2 c2 d3; a, b, c tie -> first occurrence
    assert v.idx_to_token == [UNK, "d", "a", "b", "c"]
    assert v.counts == [0, 3, 2, 2, 2]


def test_same_text_same_vocab():
    text = "the time traveller (for so it will be convenient to speak of him)"
    assert Vocab.build(list(text)).idx_to_token == Vocab.build(list(text)).idx_to_token


def test_unk_is_zero_and_unknown_tokens_map_to_it():
    v = Vocab.build(list("hello"))
    assert v.unk_id == 0 and v.idx_to_token[0] == UNK
    assert v.encode(list("hez")) == [v.token_to_idx["h"], v.token_to_idx["e"], 0]
    assert v.unknown(list("hezzq")) == ["z", "q"]


def test_reserved_tokens_follow_unk_and_min_freq_drops_rare():
    v = Vocab.build(list("aaabbc"), min_freq=2, reserved=["<bos>"])
    assert v.idx_to_token == [UNK, "<bos>", "a", "b"]
    assert v.encode(["c"]) == [0]


def test_without_unk_unknown_raises():
    v = Vocab.build(list("ab"), unk=None)
    assert v.idx_to_token == ["a", "b"]
    with pytest.raises(KeyError):
        v.encode(["z"])


def test_encode_decode_round_trip_chars_and_words():
    text = "time traveller, time machine"
    v = Vocab.build(list(text))
    assert v.decode(v.encode(list(text))) == text
    words = text.split()
    w = Vocab.build(words, separator=" ")
    assert w.decode(w.encode(words)) == text


def test_json_round_trip_keeps_everything_including_unicode():
    v = Vocab.build(list("分开不分开\n"), min_freq=0)
    back = Vocab.from_json(v.to_json())
    assert back == v
    assert back.token_to_idx == v.token_to_idx and back.separator == v.separator


def test_corrupt_vocab_json_is_an_error():
    with pytest.raises(RnnlabError):
        Vocab.from_dict({"nothing": []})
    with pytest.raises(RnnlabError):
        Vocab(["a", "a"], unk=None)
