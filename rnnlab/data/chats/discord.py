"""Discord channels exported as JSON by DiscordChatExporter (``{"guild", "channel", "messages"}``,
one file per channel).

Messages of type ``Default`` and ``Reply`` are text (the author's nickname, else their user
name); joins, pins, calls and the other types are system records; attachments, embeds or stickers
without text are media.
"""
from __future__ import annotations

from typing import Any, Iterator

from .base import Record

_TEXT_TYPES = ("Default", "Reply", 0, 19)


def claims(doc: Any) -> bool:
    if not (isinstance(doc, dict) and isinstance(doc.get("messages"), list) and "channel" in doc):
        return False
    sample = [m for m in doc["messages"][:20] if isinstance(m, dict)]
    return all(isinstance(m.get("author"), dict) and "content" in m for m in sample)


def records(docs: list[tuple[str, Any]]) -> Iterator[Record]:
    for _, doc in docs:
        for m in doc["messages"]:
            if isinstance(m, dict):
                yield _record(m)


def _record(m: dict) -> Record:
    author = m.get("author") if isinstance(m.get("author"), dict) else {}
    sender = str(author.get("nickname") or author.get("name") or "")
    if m.get("type", "Default") not in _TEXT_TYPES:
        return Record(sender, "", "system")
    text = m.get("content") if isinstance(m.get("content"), str) else ""
    if not text.strip() and (m.get("attachments") or m.get("embeds") or m.get("stickers")):
        return Record(sender, "", "media")
    return Record(sender, text)
