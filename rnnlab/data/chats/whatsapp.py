r"""WhatsApp's "Export chat" text (``_chat.txt`` on iOS, ``WhatsApp Chat with NAME.txt`` on Android).

Each message starts a line with its date and time; the two layouts, in every locale's date and
clock style::

    Android   12/31/20, 9:41 PM - Ana: text         31.12.20, 21:41 - Ana: text
    iOS       [31/12/2020, 21:41:12] Ana: text      [12/31/20, 9:41:12 PM] Ana: text

Lines without a timestamp continue the message above (a multi-line message). The date itself is
never interpreted, so day-first and month-first dates read alike; a file's layout (brackets or a
dash, the date separator, where the 4-digit year is, seconds, a 12-hour clock) is the one most of
its lines have, and a line in another layout is text of the message above — so a message that
quotes a timestamp stays one message. (A continuation line in exactly the file's own layout cannot
be told from a new message.) A file whose lines are split between two layouts is refused as mixed.

Dropped: lines without a sender (group events, the encryption notice), iOS's system lines (their
text starts with U+200E), media placeholders (``<Media omitted>``, ``image omitted``,
``<attached: ...>``, ``... (file attached)`` without a caption) and deleted-message notices;
"<This message was edited>" is removed from the text.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

from ...errors import UsageError
from .base import Record

_SP = r"[\s\u202f\u00a0]"
_LEAD = r"[\u200e\u200f\ufeff]*"
_DATE = r"(?P<date>(?P<d1>\d{1,4})(?P<sep>[./-])\d{1,2}(?P=sep)(?P<d3>\d{1,4})\.?)"
_TIME = rf"(?P<time>\d{{1,2}}[:.]\d{{2}}(?P<sec>[:.]\d{{2}})?)(?:{_SP}?(?P<ampm>[AaPp]\.?{_SP}?[Mm]\.?))?"
_IOS = re.compile(rf"{_LEAD}\[{_DATE},?{_SP}{_TIME}\]{_SP}*(?P<rest>.*)", re.S)
_ANDROID = re.compile(rf"{_LEAD}{_DATE},?{_SP}{_TIME}{_SP}+[-–]{_SP}+(?P<rest>.*)", re.S)
_SENDER = re.compile(r"(?P<sender>[^:\"“”\n]{1,100}?):(?:[ \u00a0]|$)(?P<text>.*)", re.S)

_MEDIA = re.compile(r"<[^<>]*omitted>|(image|video|audio|sticker|gif|document|contact card|photo|video note)"
                    r" omitted|<attached: [^<>]*>|.+ \(file attached\)|location: https?://\S+|live location shared",
                    re.I)
_DELETED = re.compile(r"(this message was deleted|you deleted this message)( by (an )?admin.*)?\.?", re.I)
_SYSTEM = re.compile(r"messages and calls are end-to-end encrypted|messages to this (group|chat) are now secured"
                     r"|waiting for this message|missed (voice|video|group voice|group video) call", re.I)
_EDITED = re.compile(r"\s*<this message was edited>\s*$", re.I)
_DATEISH = re.compile(r"\W{0,3}\d{1,4}[./:-]\d{1,2}")


@dataclass(frozen=True)
class Layout:
    ios: bool
    sep: str
    year_first: bool  # a 4-digit first field (2020-12-31)
    seconds: bool
    twelve_hour: bool
    example: str = ""  # the first timestamp seen, as written

    def key(self) -> tuple:
        return (self.ios, self.sep, self.year_first, self.seconds, self.twelve_hour)

    def describe(self) -> str:
        return f"{'iOS' if self.ios else 'Android'} layout, lines like '{self.example} Name: text'"


def _match(line: str):
    return _IOS.match(line) or _ANDROID.match(line)


def _layout(m: re.Match) -> Layout:
    ios = m.re is _IOS
    return Layout(ios, m["sep"], len(m["d1"]) == 4, bool(m["sec"]), bool(m["ampm"]),
                  m.string[:m.start("rest")].strip().strip("\u200e\u200f\ufeff"))


def detect(text: str, strict: bool = False) -> Layout | None:
    """The file's layout when a tenth of its lines are WhatsApp message lines (any one will do with
    ``strict``, when the user named the format); None when it is not a WhatsApp export. Two layouts
    each with many lines are a mixed file: a ``UsageError``."""
    counts: Counter = Counter()
    first: dict[tuple, Layout] = {}
    lines = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        lines += 1
        m = _match(line)
        if m:
            lay = _layout(m)
            counts[lay.key()] += 1
            first.setdefault(lay.key(), lay)
    if not counts:
        return None
    (top, n), *rest = counts.most_common()
    if not strict and n < max(1, lines // 10):
        return None
    if rest and rest[0][1] > max(2, n // 10):
        a, b = first[top], first[rest[0][0]]
        raise UsageError(f"mixed WhatsApp layouts: {n:,} lines like '{a.example}' and {rest[0][1]:,} like "
                         f"'{b.example}' (two exports joined?); give one export at a time")
    return first[top]


def looks_like_a_log(text: str) -> bool:
    """Many lines start with a date or time: a chat log of a layout rnnlab does not know."""
    lines = [ln for ln in text.splitlines()[:5000] if ln.strip()]
    n = sum(1 for ln in lines if _DATEISH.match(ln))
    return n >= 3 and n >= 0.3 * len(lines)


def records(text: str, layout: Layout) -> Iterator[Record]:
    """The file's messages, in order (lines before the first message are one system record)."""
    key = layout.key()
    head: str | None = None
    body: list[str] = []
    preamble = False
    for line in text.splitlines():
        m = _match(line)
        if m and _layout(m).key() == key:
            if head is not None:
                yield _record(head, body, layout.ios)
            head, body = m["rest"], []
        elif head is not None:
            body.append(line)
        elif line.strip():
            preamble = True
    if preamble:
        yield Record("", "", "system")
    if head is not None:
        yield _record(head, body, layout.ios)


def _record(head: str, body: list[str], ios: bool) -> Record:
    m = _SENDER.match(head)
    if m is None:  # "Ana added Ben", the encryption notice: no "Name: "
        return Record("", "", "system")
    sender, first = m["sender"].strip(), m["text"]
    if first.startswith("\u200e"):  # iOS marks its own lines (and media) with a left-to-right mark
        core = first.strip("\u200e ")
        return Record(sender, "", "media" if _MEDIA.fullmatch(core) else
                      "deleted" if _DELETED.fullmatch(core) else "system")
    lines = [_EDITED.sub("", line) for line in (first, *body)]
    text = "\n".join(lines).strip()
    if _DELETED.fullmatch(text):
        return Record(sender, "", "deleted")
    if _SYSTEM.match(text):
        return Record(sender, "", "system")
    if _MEDIA.fullmatch(lines[0].strip("\u200e ")):  # a placeholder line, maybe with a caption below it
        caption = "\n".join(lines[1:]).strip()
        return Record(sender, caption) if caption else Record(sender, "", "media")
    return Record(sender, text)


def require(text: str, where: str) -> Layout:
    """``--chat whatsapp``: the layout, or a ``UsageError`` saying what a WhatsApp line looks like."""
    layout = detect(text, strict=True)
    if layout is None:
        raise UsageError(f"{where}: no WhatsApp message lines (like '12/31/20, 9:41 PM - Ana: text' or "
                         f"'[31/12/2020, 21:41:12] Ana: text'); check the file, or use --chat auto")
    return layout
