"""Telegram Desktop's "Export chat history" in JSON (``result.json``): one chat, or the whole
account's export (``{"chats": {"list": [...]}}``).

A message's ``text`` is a string or a list of pieces (strings and ``{"type": "bold", "text": ...}``
entities), joined as they are. Service messages (joins, pins, calls) are system records; a photo,
file, sticker or other media without a caption is media; a forwarded message is not the sender's
own writing and is dropped as forwarded.
"""
from __future__ import annotations

from typing import Any, Iterator

from .base import Record, text_of_pieces

_MEDIA_KEYS = ("photo", "file", "media_type", "sticker_emoji", "location_information", "poll", "contact_information",
               "game_title", "invoice_information", "place_name")


def _chats(doc: Any) -> list[dict]:
    if isinstance(doc, dict) and isinstance(doc.get("messages"), list):
        return [doc]
    if isinstance(doc, dict):
        out = []
        for key in ("chats", "left_chats"):
            section = doc.get(key)
            if isinstance(section, dict) and isinstance(section.get("list"), list):
                out += [c for c in section["list"] if isinstance(c, dict) and isinstance(c.get("messages"), list)]
        return out
    return []


def claims(doc: Any) -> bool:
    """A Telegram export: chats whose messages carry Telegram's ``type``/``date``/``text`` fields."""
    chats = _chats(doc)
    if not chats:
        return False
    msgs = [m for c in chats for m in c["messages"][:20] if isinstance(m, dict)]
    if not msgs:  # chats without messages: Telegram's shape if the chat has Telegram's own fields
        return all("type" in c and "id" in c for c in chats)
    return all(m.get("type") in ("message", "service") and "date" in m for m in msgs)


def records(docs: list[tuple[str, Any]]) -> Iterator[Record]:
    for _, doc in docs:
        for chat in _chats(doc):
            for m in chat["messages"]:
                if isinstance(m, dict):
                    yield _record(m)


def _record(m: dict) -> Record:
    sender = str(m.get("from") or m.get("actor") or m.get("from_id") or "")
    if m.get("type") != "message":
        return Record(sender, "", "system")
    text = text_of_pieces(m.get("text", ""))
    if not text.strip() and "text_entities" in m:
        text = text_of_pieces(m["text_entities"])
    if m.get("forwarded_from") is not None or "forwarded_from" in m:
        return Record(sender, "", "forwarded")
    if not text.strip() and any(k in m for k in _MEDIA_KEYS):
        return Record(sender, "", "media")
    return Record(sender, text)
