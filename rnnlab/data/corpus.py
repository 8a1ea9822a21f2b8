"""Reading a corpus: UTF-8 text with clear errors, preprocessing presets, char/word tokens."""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import RnnlabError, UsageError
from ..io import check_fits_in_memory, os_error_hint
from .textfile import IN_MEMORY_FACTOR, check_input_file, is_wide_encoding  # noqa: F401 (re-exported)

NON_LETTERS = re.compile(r"[^A-Za-z]+")


def read_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict", allow_empty: bool = False) -> str:
    """Read a whole text file, or the single text member of a ``.zip``.

    Raises ``RnnlabError`` with a one-line message for a missing path, a directory, a device or
    FIFO, a file too large for memory, a binary file, undecodable bytes (with the byte offset) and
    empty or whitespace-only text (unless ``allow_empty``).
    """
    p = Path(path)
    size = check_input_file(p)
    check_fits_in_memory(p, size, IN_MEMORY_FACTOR, "text in memory",
                         f"encode it once with `rnnlab prepare {p} --out DIR`, then `rnnlab train --prepared DIR`")
    try:
        data = _read_zip_member(p) if p.suffix == ".zip" else p.read_bytes()
    except OSError as e:
        raise RnnlabError(f"{p}: cannot read it ({e.strerror or e}); {os_error_hint(e)}") from None
    wide = is_wide_encoding(encoding)
    if not wide and b"\x00" in data[:65536]:
        raise RnnlabError(f"{p}: looks like a binary file (NUL bytes); give a plain text file "
                          f"(or pass --encoding utf-16 for UTF-16 text)")
    try:
        text = data.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        raise RnnlabError(
            f"{p}: not valid {encoding} at byte offset {e.start}; "
            f"pass --encoding (e.g. latin-1 or utf-16) or --errors replace"
        ) from None
    if "\x00" in text[:65536]:  # after decoding: UTF-16 text has NUL bytes, but no NUL characters
        raise RnnlabError(f"{p}: looks like a binary file (NUL characters); give a plain text file "
                          f"(or pass --encoding utf-16 for UTF-16 text)")
    text = text.lstrip("\ufeff")  # a byte-order mark is not text
    if not text.strip() and not allow_empty:
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
        return NON_LETTERS.sub(" ", text).strip().lower()
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
    ``source`` says where it came from; ``chat`` is the chat export it was read from, if any
    (``rnnlab.data.chats.ChatText``: the cleaned messages and the reader's report)."""

    tokens: list[str]
    source: str
    chat: Any = None


def load_corpus(path: str | Path, preset: str = "raw", token: str = "char",
                encoding: str = "utf-8", errors: str = "strict", chat: str | None = None,
                speakers: Sequence[str] = ()) -> Corpus:
    """The tokens of a text file, or with ``chat`` (a format or "auto") of a chat export's messages
    (``speakers``: only theirs), one message a line."""
    chat_text = None
    if chat is not None:
        from .chats import read_chat

        chat_text = read_chat(path, chat, speakers, encoding, errors)
        raw = chat_text.text
    else:
        raw = read_text(path, encoding=encoding, errors=errors)
    tokens = tokenize(preprocess(raw, preset), token)
    if not tokens:
        raise RnnlabError(f"{path}: no tokens left after --preset {preset}; try --preset raw")
    return Corpus(tokens=tokens, source=str(path), chat=chat_text)
