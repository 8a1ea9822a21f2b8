"""What every reader of a text file checks first: that it is a readable regular file of a sane
size, how much memory reading it whole takes, and whether its encoding is a wide one (UTF-16/32).
Used by ``corpus`` (plain texts), ``chats`` (chat exports) and ``prepared`` (prepared corpora)."""
from __future__ import annotations

import codecs
from pathlib import Path

from ..errors import UsageError
from ..io import check_input_file as _check_input_file

#: bytes of memory per byte of text when a corpus is read whole (the text, its token list, the ids)
IN_MEMORY_FACTOR = 40


def is_wide_encoding(encoding: str) -> bool:
    """Whether ``encoding`` is UTF-16 or UTF-32 (whose text has NUL bytes); an unknown name is a
    ``UsageError``."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise UsageError(f"unknown --encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1") from None
    return name.startswith(("utf-16", "utf-32"))


def check_input_file(p: Path) -> int:
    """``rnnlab.io.check_input_file`` for a text (the fix names ``--dataset`` too)."""
    return _check_input_file(p, "text file", "check the path or use --dataset NAME")
