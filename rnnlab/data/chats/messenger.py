"""Facebook Messenger's JSON from "Download your information" (``message_1.json``, ...; one file
per thread part, newest message first) and the newer end-to-end-encrypted chats' export
(``senderName``/``text``/``timestamp``).

Facebook writes the UTF-8 bytes of every string as Latin-1 characters ("cafÃ©" for "café"); each
string is repaired when it round-trips (``base.repair_mojibake``). Messages are put in time order.
Calls, joins and reactions are system records; photos, videos, stickers, files and audio without
text are media; an unsent message is deleted.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

from .base import Record, repair_mojibake

_MEDIA_KEYS = ("photos", "videos", "audio_files", "gifs", "files", "sticker", "media")
_AUTO = re.compile(r".{1,100} (sent|shared) (a|an|\d+) (photos?|videos?|attachments?|gifs?|stickers?|voice messages?|"
                   r"audio clips?|files?|links?|locations?)\.?|.{1,100} unsent a message\.?|reacted .{1,20} to your "
                   r"message", re.I)
_SYSTEM_TYPES = ("Call", "Subscribe", "Unsubscribe", "Payment", "call", "subscribe", "unsubscribe")


def _messages(doc: Any) -> list | None:
    if isinstance(doc, dict) and isinstance(doc.get("messages"), list) and "participants" in doc:
        return doc["messages"]
    return None


def claims(doc: Any) -> bool:
    msgs = _messages(doc)
    if msgs is None:
        return False
    sample = [m for m in msgs[:20] if isinstance(m, dict)]
    return all(("sender_name" in m and "timestamp_ms" in m) or ("senderName" in m and "timestamp" in m)
               for m in sample)


def records(docs: list[tuple[str, Any]]) -> Iterator[Record]:
    """Each thread's messages in time order (the parts of one thread are the files of one folder)."""
    threads: dict[str, list[dict]] = {}
    for name, doc in docs:
        folder = name.rsplit("/", 1)[0] if "/" in name else ""
        threads.setdefault(folder, []).extend(m for m in _messages(doc) or [] if isinstance(m, dict))
    for msgs in threads.values():
        for m in sorted(msgs, key=_time):  # stable: messages of the same millisecond keep their order
            yield _record(m)


def _time(m: dict) -> float:
    t = m.get("timestamp_ms", m.get("timestamp", 0))
    return float(t) if isinstance(t, (int, float)) else 0.0


def _record(m: dict) -> Record:
    sender = repair_mojibake(str(m.get("sender_name", m.get("senderName", ""))))
    text = m.get("content", m.get("text", ""))
    text = repair_mojibake(text) if isinstance(text, str) else ""
    if m.get("is_unsent") or m.get("isUnsent"):
        return Record(sender, "", "deleted")
    if m.get("type") in _SYSTEM_TYPES:
        return Record(sender, "", "system")
    if _AUTO.fullmatch(text.strip()):
        return Record(sender, "", "deleted" if "unsent" in text else "media" if " sent " in text or " shared " in text
                      else "system")
    if not text.strip() and any(m.get(k) for k in _MEDIA_KEYS):
        return Record(sender, "", "media")
    return Record(sender, text)
