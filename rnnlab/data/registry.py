"""Named datasets: where each is published, its checksum, and a local cache.

The cache directory is ``$RNNLAB_DATA_DIR`` when set, else a per-user cache directory. A file
present there is verified against its SHA-1; a missing one is downloaded, verified, and moved into
place atomically; with no network the error names the URL and where to put the file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import RnnlabError, UsageError


@dataclass(frozen=True)
class Dataset:
    name: str
    filename: str
    url: str
    sha1: str | None  # None: no published checksum, the size is checked instead
    size: int | None
    description: str
    prefixes: tuple[str, ...]  # prompts used for progress samples


DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("timemachine", "timemachine.txt",
            "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
            "090b5e7e70c295757f55df93cb0a180b9691891a", 178979,
            "H. G. Wells, The Time Machine (the d2l book's corpus)", ("time traveller", "traveller")),
    Dataset("tinyshakespeare", "tinyshakespeare.txt",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "04486597058d11dcc2c556b1d0433891eb639d2e", 1115394,
            "Tiny Shakespeare (char-rnn, nanoGPT)", ("ROMEO:", "First Citizen:")),
    Dataset("jaychou", "jaychou_lyrics.txt.zip",
            "https://raw.githubusercontent.com/d2l-ai/d2l-zh/89403b9792861d86a0f1735cdd4a3d60c423f5a2/data/jaychou_lyrics.txt.zip",
            "aea46bd5d5fb2f05d6cd38d8e6b461d679fa4f00", None,
            "Jay Chou lyrics (the Chinese d2l edition), a zip of one UTF-8 file", ("分开", "不分开")),
    # Keras' copy publishes no checksum: only its size (600,901 bytes, as the AWS post says) is checked.
    Dataset("nietzsche", "nietzsche.txt",
            "https://s3.amazonaws.com/text-datasets/nietzsche.txt",
            None, 600901,
            "Nietzsche, Beyond Good and Evil (Keras' text-datasets; size-checked only)",
            ("the ", "we ")),
]}


def data_dir() -> Path:
    env = os.environ.get("RNNLAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("rnnlab")) / "data"


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(ds: Dataset, path: Path) -> None:
    """Raise unless ``path`` holds exactly the dataset's published bytes."""
    if ds.sha1 is not None:
        got = _sha1(path)
        if got != ds.sha1:
            raise RnnlabError(f"{path}: SHA-1 {got} does not match {ds.name}'s {ds.sha1}; "
                              f"delete the file to download it again from {ds.url}")
    elif ds.size is not None and path.stat().st_size != ds.size:
        raise RnnlabError(f"{path}: {path.stat().st_size} bytes, but {ds.name} has {ds.size}; "
                          f"delete the file to download it again from {ds.url}")


def lookup(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise UsageError(f"unknown --dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def dataset_path(name: str, download: bool = True, timeout: float = 30.0) -> Path:
    """The verified local file of dataset ``name``, downloading it into the cache if needed."""
    ds = lookup(name)
    root = data_dir()
    path = root / ds.filename
    if path.exists():
        verify(ds, path)
        return path
    where = f"put {ds.filename} in {root} (or set RNNLAB_DATA_DIR to a folder holding it)"
    if not download:
        raise RnnlabError(f"dataset {name} is not in {root}; {where}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{ds.filename}.", suffix=".part")
    except OSError as e:
        raise RnnlabError(f"cannot write to the data directory {root} ({e.strerror}); "
                          f"set RNNLAB_DATA_DIR to a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(ds.url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
        try:
            verify(ds, Path(tmp))
        except RnnlabError:
            raise RnnlabError(f"downloaded {name} from {ds.url}, but it does not match the published "
                              f"{'SHA-1' if ds.sha1 else 'size'} (a corrupted download, or the file changed); "
                              f"try again, or {where}") from None
        os.replace(tmp, path)
    except OSError as e:  # URLError, timeouts and HTTP errors are OSErrors
        raise RnnlabError(f"could not download {name} from {ds.url} ({getattr(e, 'reason', e)}); "
                          f"{where}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
