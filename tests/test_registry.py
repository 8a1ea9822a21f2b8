import hashlib

import pytest

from conftest import data_available
from rnnlab.data import registry
from rnnlab.data.corpus import read_text
from rnnlab.errors import RnnlabError, UsageError


def test_local_copy_is_verified_and_used(tmp_path, monkeypatch):
    if not data_available("timemachine.txt"):
        pytest.skip("no local timemachine.txt")
    path = registry.dataset_path("timemachine", download=False)
    assert hashlib.sha1(path.read_bytes()).hexdigest() == registry.DATASETS["timemachine"].sha1
    assert "Time Traveller" in read_text(path)


def test_jaychou_zip_reads_as_utf8():
    if not data_available("jaychou_lyrics.txt.zip"):
        pytest.skip("no local jaychou zip")
    text = read_text(registry.dataset_path("jaychou", download=False))
    assert "分开" in text and len(set(text)) > 2000


def test_checksum_mismatch_is_an_error_naming_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path))
    (tmp_path / "timemachine.txt").write_text("not the time machine")
    with pytest.raises(RnnlabError, match="does not match.*d2l-data"):
        registry.dataset_path("timemachine")


def test_offline_download_error_names_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path))

    def no_network(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(registry.urllib.request, "urlopen", no_network)
    with pytest.raises(RnnlabError) as e:
        registry.dataset_path("tinyshakespeare")
    msg = str(e.value)
    assert registry.DATASETS["tinyshakespeare"].url in msg and str(tmp_path) in msg
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_is_verified_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path))
    payload = b"hello rnn\n"
    ds = registry.Dataset("toy", "toy.txt", "http://example.invalid/toy.txt",
                          hashlib.sha1(payload).hexdigest(), None, "toy", ("h",))
    monkeypatch.setitem(registry.DATASETS, "toy", ds)

    class Resp:
        def __init__(self):
            self.done = False

        def read(self, n):
            if self.done:
                return b""
            self.done = True
            return payload

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    calls = []
    monkeypatch.setattr(registry.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or Resp())
    assert registry.dataset_path("toy").read_bytes() == payload
    assert registry.dataset_path("toy").read_bytes() == payload
    assert calls == [ds.url]  # the second call used the cache


def test_corrupt_download_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path))
    ds = registry.Dataset("toy", "toy.txt", "http://example.invalid/toy.txt", "0" * 40, None, "toy", ("h",))
    monkeypatch.setitem(registry.DATASETS, "toy", ds)

    class Resp:
        def __init__(self):
            self.chunks = [b"garbage"]

        def read(self, n):
            return self.chunks.pop() if self.chunks else b""

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(registry.urllib.request, "urlopen", lambda url, timeout: Resp())
    with pytest.raises(RnnlabError, match="does not match"):
        registry.dataset_path("toy")
    assert not (tmp_path / "toy.txt").exists()


def test_unknown_dataset_is_a_usage_error():
    with pytest.raises(UsageError, match="timemachine"):
        registry.dataset_path("shakespeare-complete")
