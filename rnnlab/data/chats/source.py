"""Where a chat export is: one file, a ``.zip``, or an unpacked folder — and which format it is.

Only ``.txt`` and ``.json`` members of a zip or folder are read (never the photos and videos an
export carries); each is classified by its content. Well-known names decide first: a WhatsApp
zip's ``_chat.txt`` / ``WhatsApp Chat with NAME.txt`` is the chat (the other files are its
attachments, even a ``.txt`` one). Otherwise every member is classified, and exactly one export
format must be found: none is "no chat in it", two are "mixed".
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import RnnlabError, UsageError
from ...runtime import available_memory
from ..textfile import IN_MEMORY_FACTOR, check_input_file, is_wide_encoding
from . import discord, messenger, slack, telegram, whatsapp

JSON_FORMATS = {"telegram": telegram, "messenger": messenger, "discord": discord, "slack": slack}
MAX_FILES = 100_000  # files looked at in a folder
_WHATSAPP_NAME = re.compile(r"(_chat|WhatsApp Chat.*)\.txt", re.I)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass
class Member:
    """One file of the export, decoded; ``kind`` is a format name, "text" (plain), "slack-users",
    "json" (JSON that is no export), "bad-json", or "unreadable" (``error`` says why: in a zip or
    folder an attachment that cannot be decoded is skipped, unless nothing else is a chat)."""

    name: str
    text: str
    kind: str = ""
    doc: Any = None  # the parsed JSON
    layout: whatsapp.Layout | None = None
    error: RnnlabError | None = None


@dataclass
class Found:
    format: str
    members: list[Member]
    users: dict[str, str] = field(default_factory=dict)  # Slack user id -> name

    @property
    def layout(self) -> str:
        lay = next((m.layout for m in self.members if m.layout is not None), None)
        return lay.describe() if lay else ""


def load(path: str | Path, encoding: str, errors: str) -> tuple[str, list[Member]]:
    """("file" | "zip" | "folder", the decoded text members)."""
    p = Path(path)
    if p.is_dir():
        return "folder", _decode_all(p, _folder_files(p), encoding, errors)
    check_input_file(p)
    with open(p, "rb") as f:
        head = f.read(4)
    if head in _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(p) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX")
                         and i.filename.lower().endswith((".txt", ".json"))]
                _check_memory(p, sum(i.file_size for i in infos))
                return "zip", _decode_all(p, [(i.filename, lambda i=i: zf.read(i)) for i in infos], encoding, errors)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError):
            raise RnnlabError(f"{p}: not a valid zip file (damaged, or compressed in a way Python cannot read); "
                              f"export the chat again, or unpack it and give the folder") from None
    _check_memory(p, p.stat().st_size)
    return "file", _decode_all(p, [(p.name, p.read_bytes)], encoding, errors, single=True)


def _folder_files(root: Path) -> list:
    found, seen = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        seen += len(filenames)
        if seen > MAX_FILES:
            raise UsageError(f"{root}: more than {MAX_FILES:,} files in this folder; give the export's own folder")
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            if fn.lower().endswith((".txt", ".json")) and full.is_file():
                found.append((full.relative_to(root).as_posix(), full.read_bytes))
    _check_memory(root, sum(os.path.getsize(root / n) for n, _ in found))
    return found


def _check_memory(p: Path, nbytes: int) -> None:
    free = available_memory()
    if free is not None and nbytes * IN_MEMORY_FACTOR > free:
        raise RnnlabError(f"{p}: {nbytes / 2**20:,.0f} MB of chat files is too large to read into memory here; "
                          f"export fewer chats or a shorter period")


def _decode_all(p: Path, items, encoding: str, errors: str, single: bool = False) -> list[Member]:
    """The members decoded; one that cannot be is a one-line error for a ``single`` file, and an
    "unreadable" member (with its error) in a zip or folder."""
    wide = is_wide_encoding(encoding)
    out = []
    for name, read in items:
        data = read()
        where = p if single else f"{p} ({name})"
        try:
            if b"\x00" in data[:65536] and not wide:
                raise RnnlabError(f"{where}: looks like a binary file (NUL bytes); give the chat export's text or JSON")
            try:
                text = data.decode(encoding, errors=errors)
            except UnicodeDecodeError as e:
                raise RnnlabError(f"{where}: not valid {encoding} at byte offset {e.start}; pass --encoding or "
                                  f"--errors replace") from None
        except RnnlabError as e:
            if single:
                raise
            out.append(Member(name, "", "unreadable", error=e))
            continue
        out.append(Member(name, text.lstrip("\ufeff")))
    return out


def classify(m: Member, strict_whatsapp: bool = False) -> Member:
    """Set ``m.kind`` (and ``doc`` / ``layout``) from the member's content."""
    if m.text.lstrip()[:1] in ("{", "["):
        try:
            m.doc = json.loads(m.text)
        except (json.JSONDecodeError, RecursionError) as e:
            if m.name.lower().endswith(".json"):
                m.kind = "bad-json"
                m.doc = getattr(e, "lineno", None)
                return m
        else:
            m.kind = next((name for name, mod in JSON_FORMATS.items() if mod.claims(m.doc)), "json")
            if m.kind == "json" and slack.is_meta(m.name):
                m.kind = "slack-users" if m.name.rsplit("/", 1)[-1] == "users.json" else "slack-meta"
            return m
    m.layout = whatsapp.detect(m.text, strict=strict_whatsapp)
    m.kind = "whatsapp" if m.layout is not None else "text"
    return m


def find(path: str | Path, fmt: str, encoding: str = "utf-8", errors: str = "strict") -> Found:
    """The export's format (``fmt``, or detected when "auto") and the members to read."""
    where, members = load(path, encoding, errors)
    p = str(path)
    if fmt == "text":
        if where != "file":
            raise UsageError(f"{p}: --chat text reads one text file; give the file, not a {where}")
        return Found("text", members)
    if where == "file":
        return _single(p, classify(members[0], strict_whatsapp=fmt == "whatsapp"), fmt)
    named = [m for m in members if _WHATSAPP_NAME.fullmatch(m.name.rsplit("/", 1)[-1])]
    if named and fmt in ("auto", "whatsapp"):
        for m in named:
            if m.error is not None:
                raise m.error
            classify(m, strict_whatsapp=True)
            if m.layout is None:
                whatsapp.require(m.text, f"{p} ({m.name})")
        return Found("whatsapp", named)
    for m in members:
        if m.kind != "unreadable":
            classify(m, strict_whatsapp=fmt == "whatsapp")
    kinds: dict[str, list[Member]] = {}
    for m in members:
        kinds.setdefault(m.kind, []).append(m)
    chats = {k: v for k, v in kinds.items() if k in ("whatsapp", *JSON_FORMATS)}
    if fmt != "auto":
        if fmt not in chats:
            found = ", ".join(sorted(chats)) or "no chat export"
            raise UsageError(f"{p}: no {fmt} export in this {where} (found: {found}); use --chat auto")
        chats = {fmt: chats[fmt]}
    unreadable = [m for m in members if m.error is not None]
    if not chats and unreadable:
        raise unreadable[0].error
    if not chats:
        hint = " (Telegram's HTML export is not read: export as JSON)" if any(
            m.name.lower().endswith(".html") for m in members) else ""
        raise UsageError(f"{p}: a {where} without a chat export in it (no WhatsApp chat .txt, no Telegram, Messenger, "
                         f"Discord or Slack JSON){hint}; give the zip or folder the app exported, or the chat file")
    if len(chats) > 1:
        shown = "; ".join(f"{k}: {', '.join(m.name for m in v[:2])}{' ...' if len(v) > 2 else ''}"
                          for k, v in sorted(chats.items()))
        raise UsageError(f"{p}: exports of more than one kind in this {where} ({shown}); give one export at a time, "
                         f"or choose one with --chat FORMAT")
    (kind, chosen), = chats.items()
    users = {}
    if kind == "slack":
        for m in kinds.get("slack-users", []):
            users.update(slack.user_names(m.doc))
    return Found(kind, chosen, users)


def _single(p: str, m: Member, fmt: str) -> Found:
    if m.kind == "bad-json":
        raise UsageError(f"{p}: not valid JSON (near line {m.doc}; a truncated export?); export the chat again")
    if m.kind in ("json", "slack-users", "slack-meta"):
        slack_hint = " (a Slack export is the whole folder or its zip: give that)" if m.kind != "json" else ""
        raise UsageError(f"{p}: a JSON file, but not a chat export rnnlab reads{slack_hint}; give a Telegram "
                         f"result.json, a Messenger message_N.json, a DiscordChatExporter JSON or a Slack export")
    if fmt == "auto" and m.kind == "text":
        if whatsapp.looks_like_a_log(m.text):
            raise UsageError(f"{p}: its lines start with dates, but not in a chat layout rnnlab knows; name the format "
                             f"with --chat (whatsapp, telegram, messenger, discord, slack), or --chat text to read "
                             f"each line as one message")
    if fmt not in ("auto", m.kind):
        if fmt == "whatsapp":
            whatsapp.require(m.text, p)
        seen = "plain text" if m.kind == "text" else f"a {m.kind} export"
        raise UsageError(f"{p}: not a {fmt} export (it looks like {seen}); use --chat auto")
    return Found(m.kind, [m])
