"""What every chat reader shares: a record per message, the cleaning rules, the report.

A reader turns an export into ``Record``s in the order of the conversation: the sender, the text,
and ``drop`` — why the record is not text the user wrote (``"system"``, ``"media"``,
``"deleted"``, ``"forwarded"``), or None. ``collect`` then applies the rules common to every
format: the text becomes one line (a multi-line message joins its lines with a space), an empty
one is dropped, ``--speaker`` keeps only the named senders, and every record is counted.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, NamedTuple

from ...errors import UsageError

# why a record was dropped, in the order the report lists them
REASONS = ("system", "media", "deleted", "forwarded", "empty", "speaker")
_ISOLATES = dict.fromkeys(map(ord, "\u2066\u2067\u2068\u2069"))  # WhatsApp wraps @mentions in these


class Record(NamedTuple):
    sender: str
    text: str
    drop: str | None = None


@dataclass(frozen=True)
class Message:
    sender: str
    text: str  # one line


@dataclass
class ChatReport:
    """What a reader found: the format (and whether it was detected), the counts, the senders."""

    format: str
    source: str
    detected: bool = False
    layout: str = ""  # e.g. the WhatsApp line layout it recognised
    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    senders: dict[str, int] = field(default_factory=dict)  # messages with text per sender, most first
    speakers: list[str] = field(default_factory=list)  # the senders kept (empty: all)

    def describe(self) -> str:
        how = "detected" if self.detected else "as named by --chat"
        layout = f", {self.layout}" if self.layout else ""
        dropped = ", ".join(f"{r} {n:,}" for r, n in self.dropped.items())
        who = f" (senders: {', '.join(self.speakers)})" if self.speakers else ""
        return (f"chat {self.source}: {TITLES[self.format]} export ({how}{layout}); {self.read:,} messages read, "
                f"{self.kept:,} kept{who}, {sum(self.dropped.values()):,} dropped"
                + (f" ({dropped})" if dropped else ""))

    def to_dict(self) -> dict:
        return {"format": self.format, "source": self.source, "detected": self.detected, "layout": self.layout,
                "read": self.read, "kept": self.kept, "dropped": dict(self.dropped), "senders": dict(self.senders),
                "speakers": list(self.speakers)}


TITLES = {"whatsapp": "WhatsApp", "telegram": "Telegram", "messenger": "Messenger", "discord": "Discord",
          "slack": "Slack", "text": "plain-text"}


@dataclass
class ChatText:
    """A chat read and cleaned: its messages (one line each) and the report."""

    messages: list[Message]
    report: ChatReport

    @cached_property
    def text(self) -> str:
        """The cleaned text: one message a line, each line ending with a line break."""
        return "".join(m.text + "\n" for m in self.messages)


def one_line(text: str) -> str:
    """A message as one line: its lines stripped and joined by a space, blank lines dropped,
    the invisible isolate marks around @mentions removed."""
    return " ".join(part.strip() for part in text.translate(_ISOLATES).splitlines() if part.strip())


def name_key(name: str) -> str:
    """How sender names compare: case, spacing, invisible marks and WhatsApp's "~" for unsaved
    contacts do not matter."""
    name = "".join(c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf")
    return " ".join(name.split()).lstrip("~ ").casefold()


def repair_mojibake(text: str) -> str:
    """Facebook writes UTF-8 bytes as Latin-1 characters ("cafÃ©" for "café"): undo that when the
    text round-trips, else leave it as it is."""
    if not isinstance(text, str) or text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def collect(records: Iterable[Record], report: ChatReport, speakers: Iterable[str] = ()) -> ChatText:
    """Clean, filter and count ``records`` into ``report``; the messages kept, in order.

    A ``--speaker`` that matches no sender with text is a ``UsageError`` listing the names there are."""
    wanted = {name_key(s): s for s in speakers}
    dropped: Counter = Counter()
    senders: Counter = Counter()
    candidates: list[Message] = []
    for rec in records:
        report.read += 1
        text = one_line(rec.text) if rec.drop is None else ""
        reason = rec.drop or (None if text else "empty")
        if reason:
            dropped[reason] += 1
            continue
        sender = " ".join(rec.sender.split())
        senders[sender] += 1
        candidates.append(Message(sender, text))
    report.senders = dict(senders.most_common())
    if wanted:
        present = {name_key(s) for s in senders}
        missing = [s for k, s in wanted.items() if k not in present]
        if missing:
            raise UsageError(f"{report.source}: --speaker {missing[0]!r} matches no sender with messages; the "
                             f"senders are: {names_list(report.senders)}")
        keep = [m for m in candidates if name_key(m.sender) in wanted]
        dropped["speaker"] += len(candidates) - len(keep)
        candidates = keep
        report.speakers = sorted({m.sender for m in keep}, key=lambda s: -senders[s])
    report.kept = len(candidates)
    report.dropped = {r: dropped[r] for r in REASONS if dropped[r]}
    return ChatText(candidates, report)


def names_list(senders: dict[str, int], limit: int = 12) -> str:
    names = [f"{s!r} ({n:,})" if s else f"(no name) ({n:,})" for s, n in list(senders.items())[:limit]]
    more = f" and {len(senders) - limit:,} more (see `rnnlab chats FILE`)" if len(senders) > limit else ""
    return ", ".join(names) + more if names else "none"


def text_of_pieces(value) -> str:
    """Text that is a string, or a list of strings and ``{"text": ...}`` pieces (Telegram's entities)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict) else ""
                       for p in value)
    return ""

