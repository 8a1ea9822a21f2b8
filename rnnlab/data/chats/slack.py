r"""Slack's workspace export: a folder (or its zip) with ``users.json``, ``channels.json`` and one
folder per channel of day files (``general/2020-12-31.json``, each a list of messages); a single
day file reads too.

Senders are named from ``users.json`` (else the message's own profile, else the user id); Slack's
markup becomes text (``<@U123>`` -> ``@Ana``, ``<#C1|general>`` -> ``#general``, ``<url|label>`` ->
``label``, ``&amp;`` -> ``&``). Joins, topic changes, bot and other subtyped messages are system
records; a file without text is media; a deleted message (``tombstone``) is deleted. Channels in
name order, days in date order, messages in time order.
"""
from __future__ import annotations

import html
import re
from typing import Any, Iterator

from .base import Record

_TEXT_SUBTYPES = (None, "thread_broadcast", "me_message", "file_share")
_DELETED = ("tombstone", "message_deleted")
_MARKUP = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\.json")
META_FILES = ("users.json", "channels.json", "groups.json", "dms.json", "mpims.json", "integration_logs.json",
              "canvases.json", "org_users.json")


def claims(doc: Any) -> bool:
    """A day file: a list of messages with Slack's ``ts`` and ``type``."""
    if not isinstance(doc, list) or not doc:
        return False
    return all(isinstance(m, dict) and "ts" in m and m.get("type") == "message" for m in doc[:20])


def is_meta(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in META_FILES


def records(docs: list[tuple[str, Any]], users: dict[str, str] | None = None) -> Iterator[Record]:
    users = users or {}
    for _, doc in sorted(docs, key=lambda d: d[0]):  # channel/day names: channel order, then date order
        for m in sorted((m for m in doc if isinstance(m, dict)), key=_ts):
            yield _record(m, users)


def user_names(doc: Any) -> dict[str, str]:
    """``users.json``: user id -> the name people know them by (real name, else display or user name)."""
    out = {}
    for u in doc if isinstance(doc, list) else []:
        if isinstance(u, dict) and "id" in u:
            prof = u.get("profile") if isinstance(u.get("profile"), dict) else {}
            out[str(u["id"])] = str(prof.get("real_name") or u.get("real_name") or prof.get("display_name")
                                    or u.get("name") or u["id"])
    return out


def _ts(m: dict) -> float:
    try:
        return float(m.get("ts", 0))
    except (TypeError, ValueError):
        return 0.0


def _record(m: dict, users: dict[str, str]) -> Record:
    uid = str(m.get("user", ""))
    prof = m.get("user_profile") if isinstance(m.get("user_profile"), dict) else {}
    sender = users.get(uid) or str(prof.get("real_name") or prof.get("name") or m.get("username") or uid)
    sub = m.get("subtype")
    if sub in _DELETED:
        return Record(sender, "", "deleted")
    if sub not in _TEXT_SUBTYPES:
        return Record(sender, "", "system")
    text = _plain(m.get("text") if isinstance(m.get("text"), str) else "", users)
    if not text.strip() and m.get("files"):
        return Record(sender, "", "media")
    return Record(sender, text)


def _plain(text: str, users: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        target, label = m[1], m[2]
        if target.startswith("@"):
            return "@" + (label or users.get(target[1:], target[1:]))
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):  # <!here>, <!subteam^S1|@team>, <!date^...|Dec 31>
            return label or "@" + target[1:].split("^")[0]
        return label or target

    return html.unescape(_MARKUP.sub(sub, text))
