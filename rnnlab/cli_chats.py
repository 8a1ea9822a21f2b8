"""``rnnlab chats FILE`` (who is in a chat export, and how many messages each wrote) and the
``--chat-out FILE`` action that ``train``, ``eval`` and ``prepare`` share: argument parsing and
printing only; the reading is ``rnnlab.data.chats``."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from .cli_args import add_settings, build
from .config import DataConfig
from .errors import UsageError

_CHAT_FIELDS = ("chat", "speaker", "encoding", "errors")


def add_chat_out(group) -> None:
    group.add_argument("--chat-out", metavar="FILE", help="with --chat: also write the cleaned text (one message a "
                                                          "line) to FILE, to see exactly what the model reads")


def write_chat_out(args: argparse.Namespace, dcfg: DataConfig | None, chat=None) -> None:
    """``--chat-out FILE``: the chat export's cleaned text, read with the command's settings (or
    ``chat``, already read). A bad export stops before anything is written."""
    target = getattr(args, "chat_out", None)
    if not target or os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 writes it
        return
    if dcfg is None or dcfg.chat is None:
        raise UsageError("--chat-out writes the cleaned text of a chat export; give the export FILE and --chat auto "
                         "(or its format)")
    from .data.chats import read_chat
    from .io import atomic_write

    if chat is None:
        dcfg.validate()
        chat = read_chat(dcfg.path, dcfg.chat, dcfg.speaker, dcfg.encoding, dcfg.errors)
    atomic_write(target, chat.text.encode("utf-8"))
    print(f"wrote the {chat.report.kept:,} messages read from {dcfg.path} to {target}", file=sys.stderr)


def add_parser(sub) -> None:
    p = sub.add_parser("chats", help="the senders of a chat export, with their message counts", allow_abbrev=False,
                       description="Read a chat export (WhatsApp .txt or .zip, Telegram result.json, Messenger "
                                   "message_N.json, DiscordChatExporter JSON, a Slack export folder or zip) and list "
                                   "its senders with the number of text messages each wrote, so that you can pick "
                                   "yours for --speaker.")
    p.add_argument("file", metavar="FILE", help="the export: a file, a .zip, or an unpacked folder")
    skip = tuple(f for f in DataConfig.__dataclass_fields__ if f not in _CHAT_FIELDS)
    add_settings(p, DataConfig, skip=skip, help_default={"chat": "auto"})
    add_chat_out(p)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_chats)


def cmd_chats(args: argparse.Namespace) -> int:
    dcfg = build(args, DataConfig, path=args.file)
    if dcfg.chat is None:
        dcfg.chat = "auto"
    dcfg.validate()
    from .data.chats import read_chat
    from .data.chats.base import TITLES

    chat = read_chat(dcfg.path, dcfg.chat, dcfg.speaker, dcfg.encoding, dcfg.errors)
    write_chat_out(args, dcfg, chat)
    r = chat.report
    if args.json:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
        return 0
    print(r.describe())
    if r.format == "text":
        print("plain text: no sender names (each line is one message)")
        return 0
    print(f"senders ({TITLES[r.format]} messages with text):")
    width = len(f"{max(r.senders.values()):,}")
    for name, n in r.senders.items():
        print(f"  {n:>{width},}  {name or '(no name)'}")
    top = next(iter(r.senders))
    print(f"train on one sender's messages: rnnlab train {shlex.quote(args.file)} --chat {dcfg.chat} "
          f"--speaker {shlex.quote(top)} ...")
    return 0
