import zipfile

import pytest

from rnnlab.data.corpus import load_corpus, preprocess, read_text, tokenize
from rnnlab.errors import RnnlabError


def test_letters_preset_is_the_books_cleaning():
    text = "The Time Machine, by H. G. Wells [1898]\n\n\nI\n"
    assert preprocess(text, "letters") == "the time machine by h g wells i"
    assert set(preprocess(text, "letters")) <= set("abcdefghijklmnopqrstuvwxyz ")
    assert preprocess(text, "raw") == text


def test_char_and_word_tokens():
    assert tokenize("ab c", "char") == ["a", "b", " ", "c"]
    assert tokenize("the  time\nmachine", "word") == ["the", "time", "machine"]


def test_utf8_text_and_bom(tmp_path):
    p = tmp_path / "zh.txt"
    p.write_bytes("\ufeff分开 不分开\n".encode("utf-8"))
    assert read_text(p) == "分开 不分开\n"


def test_zip_with_one_member(tmp_path):
    p = tmp_path / "lyrics.txt.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("lyrics.txt", "想要有直升机\n".encode("utf-8"))
    assert read_text(p) == "想要有直升机\n"


@pytest.mark.parametrize("setup, fragment", [
    (lambda d: d / "missing.txt", "no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: (d / "e.txt").write_text("") and d / "e.txt" or d / "e.txt", "empty or whitespace"),
    (lambda d: (d / "w.txt").write_text("  \n\t ") and d / "w.txt", "empty or whitespace"),
    (lambda d: (d / "b.bin").write_bytes(b"\x89PNG\x00\x00\x01") and d / "b.bin", "binary file"),
])
def test_bad_inputs_raise_clear_errors(tmp_path, setup, fragment):
    with pytest.raises(RnnlabError, match=fragment):
        read_text(setup(tmp_path))


def test_invalid_utf8_names_the_byte_offset_and_the_fix(tmp_path):
    p = tmp_path / "latin.txt"
    p.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(RnnlabError, match=r"byte offset 3.*--encoding.*--errors replace"):
        read_text(p)
    assert read_text(p, errors="replace") == "caf\ufffd au lait"
    assert read_text(p, encoding="latin-1") == "café au lait"


def test_nothing_left_after_letters_preset(tmp_path):
    p = tmp_path / "digits.txt"
    p.write_text("1234 5678\n")
    with pytest.raises(RnnlabError, match="--preset raw"):
        load_corpus(p, preset="letters")
