"""Reading a corpus: UTF-8 text with clear errors, preprocessing presets, char/word tokens."""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import RnnlabError, UsageError

_NON_LETTERS = re.compile(r"[^A-Za-z]+")


def read_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a whole text file, or the single text member of a ``.zip``.

    Raises ``RnnlabError`` with a one-line message for a missing path, a directory, a binary
    file, invalid UTF-8 (with the byte offset) and empty or whitespace-only text.
    """
    p = Path(path)
    if not p.exists():
        raise RnnlabError(f"{p}: no such file; check the path or use --dataset NAME")
    if p.is_dir():
        raise RnnlabError(f"{p}: is a directory; give a text file inside it")
    if p.suffix == ".zip":
        data = _read_zip_member(p)
    else:
        data = p.read_bytes()
    if b"\x00" in data[:65536]:
        raise RnnlabError(f"{p}: looks like a binary file (NUL bytes); give a plain text file")
    try:
        text = data.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        raise RnnlabError(
            f"{p}: not valid {encoding} at byte offset {e.start}; "
            f"pass --encoding (e.g. latin-1) or --errors replace"
        ) from None
    except LookupError:
        raise UsageError(f"unknown --encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1") from None
    text = text.lstrip("\ufeff")  # a UTF-8 byte-order mark is not text
    if not text.strip():
        raise RnnlabError(f"{p}: the text is empty or whitespace only; give a file with text in it")
    return text


def _read_zip_member(p: Path) -> bytes:
    try:
        with zipfile.ZipFile(p) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/") and not n.startswith("__MACOSX")]
            if len(names) != 1:
                raise RnnlabError(f"{p}: a corpus zip must hold exactly one file, found {len(names)}")
            return zf.read(names[0])
    except zipfile.BadZipFile:
        raise RnnlabError(f"{p}: not a valid zip file; re-download it or give the text file") from None


def preprocess(text: str, preset: str) -> str:
    """``raw`` keeps every character; ``letters`` is the book's: each run of non-letters
    becomes one space and the rest is lowercased (26 letters and space).

    The book cleans line by line and then joins lines with nothing between them, which glues the
    last word of a line to the first of the next; here the newline is a non-letter like any other
    and becomes a space.
    """
    if preset == "raw":
        return text
    if preset == "letters":
        return _NON_LETTERS.sub(" ", text).strip().lower()
    raise UsageError(f"unknown --preset {preset!r}; choose raw or letters")


def tokenize(text: str, token: str) -> list[str]:
    """``char``: every character is a token. ``word``: whitespace-separated words (the book's
    ``line.split()``); generated words are joined by single spaces."""
    if token == "char":
        return list(text)
    if token == "word":
        return text.split()
    raise UsageError(f"unknown --token {token!r}; choose char or word")


@dataclass
class Corpus:
    """A tokenised corpus: ``tokens`` is the full stream (used to build the vocabulary) and
    ``source`` says where it came from."""

    tokens: list[str]
    source: str


def load_corpus(path: str | Path, preset: str = "raw", token: str = "char",
                encoding: str = "utf-8", errors: str = "strict") -> Corpus:
    text = preprocess(read_text(path, encoding=encoding, errors=errors), preset)
    tokens = tokenize(text, token)
    if not tokens:
        raise RnnlabError(f"{path}: no tokens left after --preset {preset}; try --preset raw")
    return Corpus(tokens=tokens, source=str(path))
