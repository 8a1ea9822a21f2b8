"""Prepared corpora: streamed encoding gives the ids of in-memory encoding; training reads the memmap."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import data_available
from rnnlab.cli import main
from rnnlab.config import DataConfig
from rnnlab.data.prepared import id_dtype, load_prepared, prepare_corpus
from rnnlab.errors import RnnlabError
from rnnlab.pipeline import prepare_data

# a BOM, multi-byte characters (cut by small chunks), CRLF, runs of non-letters of every length
TRICKY = ("\ufeffThe Time Traveller (for so it will be convenient to speak of him) was expounding\r\n"
          "a recondite matter to us.  His grey eyes shone—and twinkled, café, naïve, 时间机器!!\n\n"
          "  ...  The fire burned brightly; 42 and   the soft radiance of the incandescent lights\n") * 7


def _same(prep_dir, dcfg):
    p = load_prepared(prep_dir)
    d = prepare_data(dcfg)
    assert p.vocab == d.vocab
    assert np.array_equal(np.asarray(p.ids).astype(np.int64), d.train_ids.numpy())
    return p


@pytest.mark.parametrize("preset", ["raw", "letters"])
@pytest.mark.parametrize("token", ["char", "word"])
@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
def test_streamed_ids_equal_in_memory_ids(tmp_path, preset, token, chunk):
    src = tmp_path / "t.txt"
    src.write_bytes(TRICKY.encode("utf-8"))
    meta = prepare_corpus(src, tmp_path / "p", preset=preset, token=token, chunk_bytes=chunk)
    p = _same(tmp_path / "p", DataConfig(path=str(src), preset=preset, token=token))
    assert meta["tokens"] == len(p.ids) and p.ids.dtype == np.uint8 and not p.ids.flags.writeable


def test_min_freq_and_another_encoding(tmp_path):
    src = tmp_path / "t.txt"
    src.write_bytes("caf\xe9 na\xefve caf\xe9 x y z caf\xe9\n".encode("latin-1") * 3)
    prepare_corpus(src, tmp_path / "p", token="word", min_freq=4, encoding="latin-1", chunk_bytes=7)
    p = _same(tmp_path / "p", DataConfig(path=str(src), token="word", min_freq=4, encoding="latin-1"))
    assert p.vocab.idx_to_token[:2] == ["<unk>", "café"]


@pytest.mark.skipif(not data_available("jaychou_lyrics.txt.zip"), reason="jaychou not in the data directory")
def test_a_zip_corpus_with_a_large_vocabulary_uses_uint16(tmp_path):
    from rnnlab.data.registry import dataset_path

    prepare_corpus(dataset_path("jaychou"), tmp_path / "p", chunk_bytes=1000)
    p = _same(tmp_path / "p", DataConfig(dataset="jaychou"))
    assert p.ids.dtype == np.uint16 and len(p.vocab) > 256


def test_id_dtype_by_vocabulary_size():
    assert [id_dtype(n).name for n in (2, 256, 257, 65536, 65537)] == ["uint8", "uint8", "uint16", "uint16", "uint32"]


def test_errors_match_read_text(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("abc".encode() * 1000 + b"\xff" + b"def")
    with pytest.raises(RnnlabError, match="not valid utf-8 at byte offset 3000"):
        prepare_corpus(bad, tmp_path / "p", chunk_bytes=7)
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n")
    with pytest.raises(RnnlabError, match="empty or whitespace only"):
        prepare_corpus(blank, tmp_path / "p")
    with pytest.raises(RnnlabError, match="no such file"):
        prepare_corpus(tmp_path / "missing.txt", tmp_path / "p")
    with pytest.raises(RnnlabError, match="not a prepared corpus"):
        load_prepared(tmp_path)


def test_a_truncated_id_file_is_refused(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text(TRICKY)
    prepare_corpus(src, tmp_path / "p")
    ids = tmp_path / "p" / "ids.bin"
    ids.write_bytes(ids.read_bytes()[:-3])
    with pytest.raises(RnnlabError, match="does not match prepared.json"):
        load_prepared(tmp_path / "p")


def test_train_prepared_equals_train_on_the_file(tmp_path, capsys):
    """Same ids, same run: metrics and weights match training on the text itself (with a
    validation split and --max-tokens), and the prepared corpus fixes preset and token."""
    src = tmp_path / "t.txt"
    src.write_text(TRICKY)
    assert main(["prepare", str(src), "--out", str(tmp_path / "p"), "--preset", "letters"]) == 0
    assert "train with: rnnlab train --prepared" in capsys.readouterr().out
    common = ["--hidden-size", "16", "--batch-size", "4", "--num-steps", "7", "--epochs", "3", "--val-fraction",
              "0.2", "--max-tokens", "800", "--predict-every", "0", "--quiet", "--sampling", "random"]
    assert main(["train", str(src), "--preset", "letters", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--prepared", str(tmp_path / "p"), *common, "--out", str(tmp_path / "b")]) == 0
    strip = lambda d: [{k: v for k, v in json.loads(x).items() if k not in ("tokens_per_sec", "elapsed_s")}  # noqa
                       for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "a") == strip(tmp_path / "b") and len(strip(tmp_path / "a")) == 3
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    stored = json.loads((tmp_path / "b" / "config.json").read_text())["data"]
    assert stored["preset"] == "letters" and stored["prepared"] == str(tmp_path / "p")
    # eval of the run's validation split reads the prepared corpus again
    assert main(["eval", str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tokens"] == 159


def test_train_prepared_usage_errors(tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text(TRICKY)
    prepare_corpus(src, tmp_path / "p")
    assert main(["train", str(src), "--prepared", str(tmp_path / "p"), "--out", str(tmp_path / "r")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["train", "--prepared", str(tmp_path / "p"), "--token", "word", "--out", str(tmp_path / "r")]) == 2
    assert "--token was fixed by `rnnlab prepare`" in capsys.readouterr().err
    assert main(["train", "--prepared", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) != 0
    assert "not a prepared corpus" in capsys.readouterr().err


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
def test_compact_shuffle_is_random_shuffle(n):
    """Random sampling keeps its window starts in an array('q') (8 bytes each, for corpora of
    hundreds of millions of tokens): the order and the RNG use must be random.shuffle's."""
    import random
    from array import array

    from rnnlab.data.batching import shuffle_compact

    a, b = random.Random(n), random.Random(n)
    ref = list(range(n))
    a.shuffle(ref)
    got = array("q", range(n))
    shuffle_compact(b, got)
    assert list(got) == ref and a.random() == b.random()
