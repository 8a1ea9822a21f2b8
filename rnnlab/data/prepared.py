r"""Corpora larger than memory: encode once into a memory-mapped id file, then stream batches.

``rnnlab prepare FILE --out DIR`` reads the text twice, a few MB at a time, and never holds it
whole::

    FILE ──► bytes (4 MB chunks) ──► incremental decoder ──► preset (carry across chunks)
                                                                 │
                                              tokens (a word cut by a chunk is carried on)
                      pass 1: count ──► Vocab (the order Vocab.build gives in memory)
                      pass 2: encode ──► DIR/ids.bin (uint8 | uint16 | uint32, by vocabulary size)
    DIR/vocab.json, DIR/prepared.json (dtype, token count, preset, token, source, its SHA-1)

``load_prepared(DIR)`` maps ``ids.bin`` read-only as a 1-D NumPy array; the batching code reads
one minibatch at a time from it (``rnnlab.data.batching``), so training touches only the pages it
needs. The ids are exactly those ``prepare_data`` gives in memory for the same file and settings.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np

from ..config import DataConfig
from ..errors import RnnlabError, UsageError
from ..io import atomic_write, atomic_write_json, os_error_hint, read_json
from .textfile import check_input_file, is_wide_encoding
from .vocab import Vocab

IDS, VOCAB, META = "ids.bin", "vocab.json", "prepared.json"
CHAT = "chat.txt"  # a chat export's cleaned messages, the text the ids encode
FORMAT = "rnnlab-prepared"
CHUNK_BYTES = 4 << 20


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise RnnlabError(f"a vocabulary of {vocab_size} tokens is too large; raise --min-freq")


# -- streaming text ------------------------------------------------------------------------------
@contextmanager
def _open_bytes(p: Path) -> Iterator[BinaryIO]:
    """The file's bytes as a stream (the single member of a ``.zip``, like ``read_text``)."""
    check_input_file(p)
    if p.suffix != ".zip":
        with open(p, "rb") as f:
            yield f
        return
    try:
        with zipfile.ZipFile(p) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/") and not n.startswith("__MACOSX")]
            if len(names) != 1:
                raise RnnlabError(f"{p}: a corpus zip must hold exactly one file, found {len(names)}")
            with zf.open(names[0]) as f:
                yield f
    except zipfile.BadZipFile:
        raise RnnlabError(f"{p}: not a valid zip file; re-download it or give the text file") from None


def stream_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict",
                chunk_bytes: int = CHUNK_BYTES, sha1: "hashlib._Hash | None" = None) -> Iterator[str]:
    """The decoded text of ``path`` in pieces whose concatenation is what ``read_text`` returns
    (same checks: binary files, invalid bytes with their offset, empty text, leading BOMs).
    ``sha1``, when given, is updated with the raw bytes."""
    p = Path(path)
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors=errors)
    except LookupError:
        raise UsageError(f"unknown --encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1") from None
    offset, head, started, any_text = 0, True, False, False
    wide = is_wide_encoding(encoding)
    with _open_bytes(p) as f:
        while True:
            data = f.read(chunk_bytes)
            final = not data
            if head and not wide and b"\x00" in data[:65536]:
                raise RnnlabError(f"{p}: looks like a binary file (NUL bytes); give a plain text file "
                                  f"(or pass --encoding utf-16 for UTF-16 text)")
            if sha1 is not None:
                sha1.update(data)
            buffered = len(decoder.getstate()[0])
            try:
                text = decoder.decode(data, final=final)
            except UnicodeDecodeError as e:
                raise RnnlabError(f"{p}: not valid {encoding} at byte offset {offset - buffered + e.start}; "
                                  f"pass --encoding (e.g. latin-1) or --errors replace") from None
            offset += len(data)
            if head and "\x00" in text[:65536]:  # after decoding: UTF-16 text has NUL bytes, not NUL characters
                raise RnnlabError(f"{p}: looks like a binary file (NUL characters); give a plain text file "
                                  f"(or pass --encoding utf-16 for UTF-16 text)")
            head = False
            if not started:  # a UTF-8 byte-order mark is not text
                text = text.lstrip("\ufeff")
                started = bool(text)
            if text:
                any_text = any_text or not text.isspace()
                yield text
            if final:
                break
    if not any_text:
        raise RnnlabError(f"{p}: the text is empty or whitespace only; give a file with text in it")


def _is_letter(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z"


def stream_preprocess(pieces: Iterator[str], preset: str) -> Iterator[str]:
    """``corpus.preprocess`` on a stream: the pieces out join to ``preprocess(whole text)``.

    ``letters`` turns each run of non-letters into one space, and a run may straddle two pieces:
    the trailing run of a piece is held back (as one space: its length does not matter) and joined
    to the next piece; the leading and the final runs are dropped, like ``strip()``.
    """
    from .corpus import NON_LETTERS, preprocess

    if preset == "raw":
        yield from pieces
        return
    if preset != "letters":
        preprocess("", preset)  # raises the usual error
    pending, started = "", False
    for piece in pieces:
        text = pending + piece
        i = len(text)
        while i > 0 and not _is_letter(text[i - 1]):
            i -= 1
        pending = " " if i < len(text) else ""
        out = NON_LETTERS.sub(" ", text[:i]).lower()
        if not started:
            out = out.lstrip(" ")
            started = bool(out)
        if out:
            yield out


def stream_tokens(pieces: Iterator[str], token: str) -> Iterator[Sequence[str]]:
    """``corpus.tokenize`` on a stream: sequences of tokens that chain to ``tokenize(whole text)``
    (for characters, the pieces themselves: a str is a sequence of 1-character tokens). A word
    cut by the end of a piece is carried into the next."""
    from .corpus import tokenize

    if token == "char":
        yield from pieces
        return
    if token != "word":
        tokenize("", token)  # raises the usual error
    carry = ""
    for piece in pieces:
        text = carry + piece
        words = text.split()
        carry = ""
        if words and not text[-1].isspace():
            carry = words.pop()
        if words:
            yield words
    if carry:
        yield [carry]


def _pieces(path: Path, preset: str, encoding: str, errors: str, chunk_bytes: int, sha1=None) -> Iterator[str]:
    return stream_preprocess(stream_text(path, encoding, errors, chunk_bytes, sha1), preset)


# -- prepare and load ----------------------------------------------------------------------------
@dataclass
class Prepared:
    """A prepared corpus: ``ids`` is a read-only memmap (N,) of ``meta['dtype']``."""

    ids: np.ndarray
    vocab: Vocab
    meta: dict
    path: Path


def prepare_corpus(path: str | Path, out_dir: str | Path, preset: str = "raw", token: str = "char",
                   min_freq: int = 0, encoding: str = "utf-8", errors: str = "strict",
                   chunk_bytes: int = CHUNK_BYTES, log=lambda msg: None, chat: str | None = None,
                   speakers: Sequence[str] = ()) -> dict:
    """Encode ``path`` into ``out_dir`` (ids.bin, vocab.json, prepared.json) in two streaming
    passes; returns the metadata written to prepared.json (written last: its presence marks a
    complete directory).

    With ``chat`` (a format or "auto"), ``path`` is a chat export: its cleaned messages
    (``speakers``' only) are written to ``out_dir/chat.txt`` and encoded from there; prepared.json
    records the reader's report."""
    if chat is None:
        return _prepare(Path(path), Path(out_dir), preset, token, min_freq, encoding, errors, chunk_bytes, log)
    from .chats import read_chat

    out, created = Path(out_dir), not Path(out_dir).exists()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory for the prepared corpus")
    found = read_chat(path, chat, speakers, encoding, errors)  # a bad export stops here, before anything is written
    log(found.report.describe())
    text_file = out / CHAT
    atomic_write(text_file, found.text.encode("utf-8"))
    try:
        meta = _prepare(text_file, out, preset, token, min_freq, "utf-8", "strict", chunk_bytes, log,
                        {"source": str(path), "chat": found.report.to_dict()})
    except BaseException:
        text_file.unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return meta


def _prepare(src: Path, out: Path, preset: str, token: str, min_freq: int, encoding: str, errors: str,
             chunk_bytes: int, log, extra: dict | None = None) -> dict:
    if min_freq < 0:
        raise UsageError(f"--min-freq must be >= 0, got {min_freq}")
    sha1 = hashlib.sha1()
    counter: Counter = Counter()  # insertion order = first occurrence, as in Vocab.build
    for toks in stream_tokens(_pieces(src, preset, encoding, errors, chunk_bytes, sha1), token):
        counter.update(toks)
    total = sum(counter.values())
    if total == 0:
        raise RnnlabError(f"{src}: no tokens left after --preset {preset}; try --preset raw")
    # Vocab.build counts its argument with Counter(), which copies a Counter: same counts, same order
    vocab = Vocab.build(counter, min_freq=min_freq, separator="" if token == "char" else " ")
    if len(vocab) == 1 and vocab.unk is not None:
        raise UsageError(f"--min-freq {min_freq} leaves only <unk> in the vocabulary of {src}; lower --min-freq")
    dtype = id_dtype(len(vocab))
    log(f"pass 1: {total:,} tokens, vocabulary {len(vocab):,} -> {dtype.name} ids")

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory for the prepared corpus")
    tmp = out / f".{IDS}.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / META).unlink(missing_ok=True)  # incomplete until written again
        _allocate(tmp, total * dtype.itemsize)  # the whole file on disk first: a full disk is an error, not a SIGBUS
        ids = np.memmap(tmp, dtype=dtype, mode="r+", shape=(total,))
        encode = _char_encoder(vocab) if token == "char" else _word_encoder(vocab)
        pos = 0
        for toks in stream_tokens(_pieces(src, preset, encoding, errors, chunk_bytes), token):
            n = len(toks)
            if pos + n > total:
                raise RnnlabError(f"{src} changed while it was being prepared; run rnnlab prepare again")
            ids[pos:pos + n] = encode(toks)
            pos += n
        if pos != total:
            raise RnnlabError(f"{src} changed while it was being prepared; run rnnlab prepare again")
        ids.flush()
        del ids
        os.replace(tmp, out / IDS)
    except OSError as e:
        raise RnnlabError(f"cannot write the prepared corpus to {out} ({e.strerror or e}); {os_error_hint(e)}") from None
    finally:
        tmp.unlink(missing_ok=True) if out.is_dir() else None
    atomic_write(out / VOCAB, (vocab.to_json() + "\n").encode("utf-8"))
    meta = {"format": FORMAT, "dtype": dtype.name, "tokens": total, "vocab_size": len(vocab), "preset": preset,
            "token": token, "min_freq": min_freq, "encoding": encoding, "source": str(src),
            "source_bytes": src.stat().st_size, "sha1": sha1.hexdigest(), **(extra or {})}
    atomic_write_json(out / META, meta)
    return meta


def _allocate(path: Path, nbytes: int) -> None:
    """Create ``path`` with ``nbytes`` really reserved on disk (``posix_fallocate``; a plain
    truncate where that is missing), so that writing through a memory map cannot fail later."""
    with open(path, "wb") as f:
        if nbytes and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(f.fileno(), 0, nbytes)
        else:
            f.truncate(nbytes)


def _char_encoder(vocab: Vocab):
    """Characters -> ids through a code-point table (the whole piece at once, in NumPy)."""
    unk = vocab.unk_id if vocab.unk_id is not None else -1
    table = np.full(0x110000, unk, dtype=np.int64)
    for tok, i in vocab.token_to_idx.items():
        if len(tok) == 1:
            table[ord(tok)] = i

    def encode(text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        out = table[cps]
        if unk < 0 and (out < 0).any():
            raise RnnlabError("a character is missing from a vocabulary without <unk>")
        return out

    return encode


def _word_encoder(vocab: Vocab):
    def encode(toks: list[str]) -> np.ndarray:
        return np.fromiter(vocab.encode(toks), dtype=np.int64, count=len(toks))

    return encode


def load_prepared(prepared_dir: str | Path) -> Prepared:
    """Map a prepared corpus (read-only; nothing is read until a batch needs it)."""
    d = Path(prepared_dir)
    if not (d / META).is_file():
        raise RnnlabError(f"{d}: not a prepared corpus (no {META}); make one with `rnnlab prepare FILE --out {d}`")
    meta = read_json(d / META, "prepared corpus description")
    try:
        vocab = Vocab.from_dict(read_json(d / VOCAB, "vocabulary"))
        dtype = np.dtype(meta["dtype"])
        n = int(meta["tokens"])
        settings = {k: meta[k] for k in ("preset", "token", "min_freq", "encoding")}
    except (ValueError, KeyError, TypeError) as e:
        raise RnnlabError(f"{d}: the prepared corpus is incomplete or corrupt ({e}); run rnnlab prepare again") from None
    try:  # the settings training will read the corpus with: the same checks as the flags
        DataConfig(**settings).validate()
        is_wide_encoding(settings["encoding"])
    except RnnlabError as e:
        raise RnnlabError(f"{d / META}: {e}; the prepared corpus is damaged: run rnnlab prepare again") from None
    if len(vocab) == 1 and vocab.unk is not None:
        raise RnnlabError(f"{d / VOCAB}: the vocabulary holds only <unk>, so every token reads the same; "
                          f"run rnnlab prepare again with a lower --min-freq")
    size = (d / IDS).stat().st_size if (d / IDS).is_file() else -1
    if meta.get("format") != FORMAT or size != n * dtype.itemsize or len(vocab) != meta.get("vocab_size"):
        raise RnnlabError(f"{d}: {IDS} does not match {META} (truncated or from another run); "
                          f"run rnnlab prepare again")
    ids = np.memmap(d / IDS, dtype=dtype, mode="r", shape=(n,))
    return Prepared(ids, vocab, meta, d)


__all__ = ["Prepared", "id_dtype", "load_prepared", "prepare_corpus", "stream_preprocess", "stream_text",
           "stream_tokens"]
