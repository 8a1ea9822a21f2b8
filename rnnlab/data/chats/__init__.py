"""Chat exports in, the user's own messages out: one message a line, ready to train a keyboard on.

    export (a file, a .zip, or a folder) ──► source.find: the format, detected from the content
        ──► the format's reader: Records (sender, text, why dropped) in conversation order
        ──► base.collect: one line per message; system lines, media and deleted messages dropped;
            --speaker keeps the named senders; every record counted (ChatReport)

Formats (``FORMATS``): WhatsApp text exports (Android and iOS layouts, any date and clock style;
``whatsapp.py``), Telegram Desktop JSON, Messenger JSON (with Facebook's Latin-1 mojibake repaired),
DiscordChatExporter JSON, Slack export folders/zips, and plain text (each non-empty line a
message). Bad input is one ``UsageError`` line naming the problem and the fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ...config import CHAT_FORMATS
from ...errors import UsageError
from . import discord, messenger, slack, telegram, whatsapp
from .base import REASONS, TITLES, ChatReport, ChatText, Message, Record, collect, name_key, one_line, repair_mojibake
from .source import Found, find

FORMATS = tuple(f for f in CHAT_FORMATS if f != "auto")  # the readers; CHAT_FORMATS adds "auto"


def _records(found: Found) -> Iterable[Record]:
    if found.format == "whatsapp":
        for m in found.members:
            yield from whatsapp.records(m.text, m.layout)
    elif found.format == "text":
        for line in found.members[0].text.splitlines():
            if line.strip():
                yield Record("", line)
    elif found.format == "slack":
        yield from slack.records([(m.name, m.doc) for m in found.members], found.users)
    else:
        yield from {"telegram": telegram, "messenger": messenger, "discord": discord}[found.format].records(
            [(m.name, m.doc) for m in found.members])


def read_chat(path: str | Path, fmt: str = "auto", speakers: Iterable[str] = (), encoding: str = "utf-8",
              errors: str = "strict") -> ChatText:
    """The messages of the export at ``path`` (a file, a zip or a folder): ``fmt`` names the format
    or "auto" detects it; ``speakers`` keeps only those senders (compared without case or spacing).

    Raises a one-line ``UsageError`` for an unknown or mixed format, a JSON that is no export, a zip
    or folder without a chat, a speaker who is not there (listing the senders) and an export with no
    message left."""
    if fmt not in CHAT_FORMATS:
        raise UsageError(f"unknown --chat {fmt!r}; choose one of: {', '.join(CHAT_FORMATS)}")
    speakers = [s for s in speakers]
    found = find(path, fmt, encoding, errors)
    if found.format == "text" and speakers:
        raise UsageError(f"{path}: plain text has no sender names, so --speaker cannot choose; drop --speaker, or "
                         f"name the chat format with --chat")
    report = ChatReport(found.format, str(path), detected=fmt == "auto", layout=found.layout)
    chat = collect(_records(found), report, speakers)
    if not chat.messages:
        dropped = ", ".join(f"{r} {n:,}" for r, n in report.dropped.items()) or "none"
        raise UsageError(f"{path}: no text message left in this {TITLES[found.format]} export ({report.read:,} read; "
                         f"dropped: {dropped}); export the chat again with its messages, or give another file")
    return chat


__all__ = ["FORMATS", "REASONS", "ChatReport", "ChatText", "Message", "name_key", "one_line", "read_chat",
           "repair_mojibake"]
