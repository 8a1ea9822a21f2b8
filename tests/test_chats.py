"""Chat exports (``rnnlab.data.chats``, ``--chat``, ``--speaker``, ``rnnlab chats``): every format and
variant written here by the tests themselves, the exact cleaned text, the detection, every bad
input through the CLI (one line, exit 2, nothing written), and a keyboard trained on one speaker's
messages end to end."""
from guards import HANG_GUARD
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile

import pytest

from rnnlab.checkpoint import load_for_inference
from rnnlab.cli import build_parser, main
from rnnlab.config import CHAT_FORMATS, DataConfig, SuggestConfig
from rnnlab.data.chats import FORMATS, read_chat, repair_mojibake
from rnnlab.errors import RnnlabError, UsageError
from rnnlab.suggest import SuggestEngine, SuggestRequest

LRM, FSI, PDI, NNBSP = "\u200e", "\u2068", "\u2069", "\u202f"


def run(*args):
    return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=HANG_GUARD, env=dict(os.environ, PYTHONIOENCODING="utf-8"))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path, obj, **kw):
    return write(path, json.dumps(obj, **kw))


def fb(text):
    """Facebook's mojibake: the UTF-8 bytes of ``text`` written as Latin-1 characters."""
    return text.encode("utf-8").decode("latin-1")


# -- WhatsApp -------------------------------------------------------------------------------------
ANDROID_US = """\
12/31/20, 9:41 PM - Messages and calls are end-to-end encrypted. No one outside of this chat, not even WhatsApp, can read or listen to them. Tap to learn more.
12/31/20, 9:41 PM - Ana created group "Trip"
12/31/20, 9:42 PM - Ana: Happy new year! 🎉🥳
12/31/20, 9:43 PM - Ben: see you at the station
bring snacks

and water
12/31/20, 9:44 PM - Ana: <Media omitted>
12/31/20, 9:45 PM - Ben: This message was deleted
12/31/20, 9:46 PM - Ana: the train leaves 1/1/21, 10:15 AM - don't be late
[1/1/21, 10:15:00 AM] Ben: was the old plan <This message was edited>
12/31/20, 9:47 PM - Dana: שלום, מה שלומך?
12/31/20, 9:48 PM - Ben: IMG-20201231-WA0001.jpg (file attached)
the view from here
12/31/20, 9:49 PM - Ben: VID-20201231-WA0002.mp4 (file attached)
1/1/21, 12:50 AM - Ana: ok: 10:15 it is
"""
ANDROID_US_TEXT = """\
Happy new year! 🎉🥳
see you at the station bring snacks and water
the train leaves 1/1/21, 10:15 AM - don't be late [1/1/21, 10:15:00 AM] Ben: was the old plan
שלום, מה שלומך?
the view from here
ok: 10:15 it is
"""

ANDROID_EU = """\
31/12/2020, 21:41 - Messages and calls are end-to-end encrypted. No one outside of this chat, not even WhatsApp, can read or listen to them. Tap to learn more.
31/12/2020, 21:42 - Ana: ¡Feliz año! 🎆
31/12/2020, 21:43 - Ben: You deleted this message
01/01/2021, 00:05 - Ben: حبيبي كيف حالك
01/01/2021, 00:06 - Ana: <Media omitted>
13/01/2021, 08:00 - Ana: day 13 proves the day comes first
"""
ANDROID_EU_TEXT = "¡Feliz año! 🎆\nحبيبي كيف حالك\nday 13 proves the day comes first\n"

ANDROID_DE = """\
31.12.20, 21:41 - Ana hat die Gruppe erstellt
31.12.20, 21:42 - Ana: Prost Neujahr!
01.01.21, 00:01 - Ben: Dir auch
und allen anderen
"""
ANDROID_DE_TEXT = "Prost Neujahr!\nDir auch und allen anderen\n"

IOS_EU = (f"\ufeff[31/12/2020, 21:41:12] Trip: {LRM}Messages and calls are end-to-end encrypted. No one outside of "
          f"this chat, not even WhatsApp, can read or listen to them.\n"
          f"[31/12/2020, 21:41:13] Ana: first line\nsecond line\n"
          f"{LRM}[31/12/2020, 21:41:14] Ben: {LRM}image omitted\n"
          f"{LRM}[31/12/2020, 21:41:15] Ben: {LRM}<attached: 00000012-PHOTO-2020-12-31-21-41-15.jpg>\n"
          f"[31/12/2020, 21:41:16] Ben: {LRM}This message was deleted.\n"
          f"[31/12/2020, 21:41:17] Ana: {LRM}Missed voice call\n"
          f"[31/12/2020, 21:41:18] Dana: 👍🏽 @{FSI}Ana{PDI} sure\n"
          f"[01/01/2021, 09:00:00] Ana: 31/12/2020, 21:41 - not a new message\n")
IOS_EU_TEXT = "first line second line\n👍🏽 @Ana sure\n31/12/2020, 21:41 - not a new message\n"

IOS_US = (f"[12/31/20, 9:41:12{NNBSP}PM] Ana: hi there\n"
          f"[12/31/20, 9:41:20{NNBSP}PM] Ben: {LRM}sticker omitted\n"
          f"[1/1/21, 12:00:01{NNBSP}AM] Ben: happy 2021 <This message was edited>\n")
IOS_US_TEXT = "hi there\nhappy 2021\n"


@pytest.mark.parametrize("export, text, layout, counts", [
    (ANDROID_US, ANDROID_US_TEXT, "Android layout, lines like '12/31/20, 9:41 PM - Name: text'",
     dict(read=11, kept=6, dropped={"system": 2, "media": 2, "deleted": 1}, senders={"Ana": 3, "Ben": 2, "Dana": 1})),
    (ANDROID_EU, ANDROID_EU_TEXT, "Android layout, lines like '31/12/2020, 21:41 - Name: text'",
     dict(read=6, kept=3, dropped={"system": 1, "media": 1, "deleted": 1}, senders={"Ana": 2, "Ben": 1})),
    (ANDROID_DE, ANDROID_DE_TEXT, "Android layout, lines like '31.12.20, 21:41 - Name: text'",
     dict(read=3, kept=2, dropped={"system": 1}, senders={"Ana": 1, "Ben": 1})),
    (IOS_EU, IOS_EU_TEXT, "iOS layout, lines like '[31/12/2020, 21:41:12] Name: text'",
     dict(read=8, kept=3, dropped={"system": 2, "media": 2, "deleted": 1}, senders={"Ana": 2, "Dana": 1})),
    (IOS_US, IOS_US_TEXT, f"iOS layout, lines like '[12/31/20, 9:41:12{NNBSP}PM] Name: text'",
     dict(read=3, kept=2, dropped={"media": 1}, senders={"Ana": 1, "Ben": 1})),
], ids=["android-12h-month-first", "android-24h-day-first", "android-dotted", "ios-24h-day-first",
        "ios-12h-month-first"])
def test_whatsapp_text_exports(tmp_path, export, text, layout, counts):
    f = write(tmp_path / "chat.txt", export)
    for fmt in ("auto", "whatsapp"):
        chat = read_chat(f, fmt)
        assert chat.text == text
        r = chat.report
        assert (r.format, r.detected, r.layout) == ("whatsapp", fmt == "auto", layout)
        assert dict(read=r.read, kept=r.kept, dropped=r.dropped, senders=r.senders) == counts
    assert "WhatsApp export (detected" in read_chat(f).report.describe()


def test_whatsapp_speaker_keeps_one_senders_messages(tmp_path):
    f = write(tmp_path / "chat.txt", ANDROID_US)
    chat = read_chat(f, "auto", ["  ben "])  # case and spacing do not matter
    assert chat.text == "see you at the station bring snacks and water\nthe view from here\n"
    assert chat.report.speakers == ["Ben"] and chat.report.dropped["speaker"] == 4 and chat.report.kept == 2
    both = read_chat(f, "auto", ["Ana", "Dana"])
    assert both.report.kept == 4 and both.report.speakers == ["Ana", "Dana"]


def test_zipped_ios_export_reads_only_the_chat(tmp_path):
    z = tmp_path / "WhatsApp Chat - Trip.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("_chat.txt", IOS_EU.encode("utf-8"))
        zf.writestr("00000012-PHOTO-2020-12-31-21-41-15.jpg", bytes(range(256)) * 4)
        zf.writestr("notes.txt", "an attached text file, not the chat\n")  # an attachment, even if it is text
        zf.writestr("00000013-friends.json", json.dumps(discord_export()))  # or another app's export sent as a file
        zf.writestr("lettre.txt", "un caf\xe9".encode("latin-1"))  # an attachment that is not UTF-8
        zf.writestr("__MACOSX/._chat.txt", b"\x00\x05\x16\x07")
    chat = read_chat(z)
    assert chat.text == IOS_EU_TEXT and chat.report.format == "whatsapp" and chat.report.detected


def test_a_chat_in_another_encoding(tmp_path):
    z = tmp_path / "export.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("_chat.txt", "[31/12/2020, 21:41:13] Zoé: un café\n".encode("latin-1"))
    with pytest.raises(RnnlabError, match=r"\(_chat.txt\): not valid utf-8 at byte offset 25; pass --encoding"):
        read_chat(z)
    assert read_chat(z, encoding="latin-1").text == "un café\n"


def test_zipped_android_export(tmp_path):
    z = tmp_path / "export.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("WhatsApp Chat with Ana.txt", ANDROID_EU)
        zf.writestr("IMG-20201231-WA0001.jpg", b"\xff\xd8\xff\xe0" + bytes(100))
    assert read_chat(z).text == ANDROID_EU_TEXT
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(z) as zf:
        zf.extractall(folder)
    assert read_chat(folder).text == ANDROID_EU_TEXT


# -- Telegram -------------------------------------------------------------------------------------
def telegram_chat(name="Ana", chat_id=42):
    m = lambda i, **kw: {"id": i, "type": "message", "date": f"2020-12-31T21:4{i % 10}:00",  # noqa: E731
                         "date_unixtime": str(1609450800 + i), **kw}
    return {"name": name, "type": "personal_chat", "id": chat_id, "messages": [
        {"id": 1, "type": "service", "date": "2020-12-31T21:40:00", "actor": "Ana", "actor_id": "user1",
         "action": "phone_call", "text": "", "text_entities": []},
        m(2, **{"from": "Ana", "from_id": "user1", "text": "plain string ✨",
                "text_entities": [{"type": "plain", "text": "plain string ✨"}]}),
        m(3, **{"from": "Ben", "from_id": "user2",
                "text": ["look at ", {"type": "bold", "text": "this"}, " and ",
                         {"type": "link", "text": "https://example.org"}]}),
        m(4, **{"from": "Ben", "from_id": "user2", "photo": "photos/photo_1.jpg", "width": 10, "height": 10,
                "text": ""}),
        m(5, **{"from": "Ana", "from_id": "user1", "photo": "photos/photo_2.jpg", "text": "caption here"}),
        m(6, **{"from": "Ana", "from_id": "user1", "forwarded_from": "News", "text": "forwarded text"}),
        m(7, **{"from": "Ben", "from_id": "user2", "file": "stickers/s.webp", "media_type": "sticker",
                "sticker_emoji": "😀", "text": ""}),
        m(8, **{"from": "Ben", "from_id": "user2", "text": "multi\nline"}),
        m(9, **{"from": "Dana", "from_id": "user3", "text": [{"type": "plain", "text": "مرحبا"}]}),
    ]}


TELEGRAM_TEXT = "plain string ✨\nlook at this and https://example.org\ncaption here\nmulti line\nمرحبا\n"


def test_telegram_single_chat(tmp_path):
    f = write_json(tmp_path / "result.json", telegram_chat(), ensure_ascii=False, indent=1)
    chat = read_chat(f)
    assert chat.text == TELEGRAM_TEXT
    r = chat.report
    assert (r.format, r.read, r.kept, r.dropped) == ("telegram", 9, 5, {"system": 1, "media": 2, "forwarded": 1})
    assert r.senders == {"Ana": 2, "Ben": 2, "Dana": 1}
    assert read_chat(f, "telegram", ["dana"]).text == "مرحبا\n"


def test_telegram_whole_account_export_in_a_folder(tmp_path):
    export = {"about": "Here is the data you requested.", "chats": {"about": "...", "list": [
        telegram_chat(), {"name": "Cy", "type": "personal_chat", "id": 7, "messages": [
            {"id": 1, "type": "message", "date": "2021-01-01T10:00:00", "from": "Cy", "text": "hello from Cy"}]}]}}
    write_json(tmp_path / "DataExport" / "result.json", export)
    write(tmp_path / "DataExport" / "chats" / "chat_001" / "messages.txt", "not part of the export\n")
    chat = read_chat(tmp_path / "DataExport")
    assert chat.text == TELEGRAM_TEXT + "hello from Cy\n" and chat.report.format == "telegram"


# -- Messenger ------------------------------------------------------------------------------------
def messenger_thread(messages, title="Zoë"):
    return {"participants": [{"name": fb("Zoë")}, {"name": "Ben"}], "messages": messages, "title": fb(title),
            "is_still_participant": True, "thread_path": "inbox/zoe_123", "magic_words": []}


MESSENGER_NEWEST_FIRST = [
    {"sender_name": "Ben", "timestamp_ms": 1609451000000, "content": fb("à bientôt 👋"), "type": "Generic",
     "is_geoblocked_for_viewer": False},
    {"sender_name": "Ben", "timestamp_ms": 1609450950000, "content": fb("Reacted ❤ to your message"),
     "type": "Generic"},
    {"sender_name": fb("Zoë"), "timestamp_ms": 1609450900000, "photos": [{"uri": "photos/1.jpg"}], "type": "Generic"},
    {"sender_name": "Ben", "timestamp_ms": 1609450850000, "content": "You unsent a message", "is_unsent": True,
     "type": "Generic"},
    {"sender_name": fb("Zoë"), "timestamp_ms": 1609450820000, "content": "Ben called you.", "call_duration": 30,
     "type": "Call"},
    {"sender_name": fb("Zoë"), "timestamp_ms": 1609450800000, "content": fb("un café ?\nou un thé"),
     "type": "Generic"},
]


def test_messenger_mojibake_repaired_and_time_order(tmp_path):
    assert repair_mojibake("cafÃ©") == "café" and repair_mojibake("café") == "café" and repair_mojibake("日本") == "日本"
    f = write_json(tmp_path / "message_1.json", messenger_thread(MESSENGER_NEWEST_FIRST))  # ASCII escapes, as Facebook
    assert "\\u00c3\\u00a9" in f.read_text()
    chat = read_chat(f)
    assert chat.text == "un café ? ou un thé\nà bientôt 👋\n"
    r = chat.report
    assert (r.format, r.read, r.kept, r.dropped) == ("messenger", 6, 2, {"system": 2, "media": 1, "deleted": 1})
    assert r.senders == {"Zoë": 1, "Ben": 1}
    assert read_chat(f, "messenger", ["ZOË"]).text == "un café ? ou un thé\n"


def test_messenger_end_to_end_encrypted_export(tmp_path):
    m = lambda t, **kw: {"isUnsent": False, "media": [], "reactions": [], "senderName": "Zoë", "text": "",  # noqa: E731
                         "timestamp": 1700000000000 + t, "type": "text", **kw}
    f = write_json(tmp_path / "zoe.json", {"participants": ["Zoë", "Ben"], "threadName": "Zoë", "messages": [
        m(3, senderName="Ben", text="à plus"), m(2, media=[{"uri": "x.jpg"}]), m(1, isUnsent=True),
        m(0, text="salut\nça va ?")]}, ensure_ascii=False)
    chat = read_chat(f)
    assert chat.report.format == "messenger" and chat.text == "salut ça va ?\nà plus\n"
    assert chat.report.dropped == {"media": 1, "deleted": 1}


def test_messenger_thread_in_parts_in_a_zip(tmp_path):
    older = [{"sender_name": "Ben", "timestamp_ms": 1609000000000, "content": "first ever", "type": "Generic"}]
    z = tmp_path / "facebook.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("messages/inbox/zoe_123/message_1.json", json.dumps(messenger_thread(MESSENGER_NEWEST_FIRST)))
        zf.writestr("messages/inbox/zoe_123/message_2.json", json.dumps(messenger_thread(older)))
        zf.writestr("messages/autofill_information.json", json.dumps({"autofill_information_v2": {}}))
        zf.writestr("messages/inbox/zoe_123/photos/1.jpg", b"\xff\xd8")
    chat = read_chat(z)
    assert chat.report.format == "messenger" and chat.text == "first ever\nun café ? ou un thé\nà bientôt 👋\n"


# -- Discord --------------------------------------------------------------------------------------
def discord_export():
    ana = {"id": "10", "name": "ana", "discriminator": "0000", "nickname": "Ana", "color": None, "isBot": False,
           "roles": [], "avatarUrl": "https://cdn/a.png"}
    ben = {**ana, "id": "11", "name": "ben_99", "nickname": "Ben"}
    msg = lambda i, author, kind="Default", content="", **kw: {  # noqa: E731
        "id": str(i), "type": kind, "timestamp": f"2020-12-31T21:4{i}:00.000+00:00", "timestampEdited": None,
        "callEndedTimestamp": None, "isPinned": False, "content": content, "author": author, "attachments": [],
        "embeds": [], "stickers": [], "reactions": [], "mentions": [], **kw}
    return {"guild": {"id": "0", "name": "Direct Messages", "iconUrl": ""},
            "channel": {"id": "1", "type": "DirectGroupTextChat", "categoryId": "0", "category": "Private",
                        "name": "friends", "topic": None},
            "dateRange": {"after": None, "before": None}, "exportedAt": "2021-01-01T00:00:00+00:00",
            "messages": [
                msg(1, ana, "RecipientAdd", "Added Ben to the group."),
                msg(2, ana, content="gg wp 🎮"),
                msg(3, ben, "Reply", "rematch?\ntomorrow", reference={"messageId": "2", "channelId": "1"}),
                msg(4, ben, attachments=[{"id": "5", "url": "x.png", "fileName": "x.png", "fileSizeBytes": 10}]),
                msg(5, ana, "ChannelPinnedMessage", "Pinned a message."),
                msg(6, ana, content="שלום לכולם"),
            ], "messageCount": 6}


def test_discord_exporter_json(tmp_path):
    f = write_json(tmp_path / "Direct Messages - friends [1].json", discord_export(), indent=2)
    chat = read_chat(f)
    assert chat.text == "gg wp 🎮\nrematch? tomorrow\nשלום לכולם\n"
    r = chat.report
    assert (r.format, r.read, r.kept, r.dropped, r.senders) == (
        "discord", 6, 3, {"system": 2, "media": 1}, {"Ana": 2, "Ben": 1})


# -- Slack ----------------------------------------------------------------------------------------
def slack_export(root):
    write_json(root / "users.json", [
        {"id": "U1", "name": "ana", "real_name": "Ana Lima", "profile": {"real_name": "Ana Lima", "display_name": "ana"}},
        {"id": "U2", "name": "ben", "profile": {"real_name": "Ben Ode", "display_name": ""}}])
    write_json(root / "channels.json", [{"id": "C1", "name": "general"}, {"id": "C2", "name": "random"}])
    write_json(root / "integration_logs.json", {"logs": []})
    write_json(root / "general" / "2021-01-01.json", [
        {"type": "message", "subtype": "channel_join", "user": "U2", "text": "<@U2> has joined the channel",
         "ts": "1609459200.000100"},
        {"type": "message", "user": "U1", "text": "hi <@U2>, see <#C2|random> &amp; <https://example.org|the site>",
         "ts": "1609459300.000200", "user_profile": {"real_name": "Ana Lima", "name": "ana"}},
        {"type": "message", "user": "U2", "text": "", "files": [{"id": "F1", "name": "a.png"}], "upload": True,
         "ts": "1609459400.000300"},
        {"type": "message", "subtype": "tombstone", "user": "USLACKBOT", "text": "This message was deleted.",
         "ts": "1609459500.000400"},
        {"type": "message", "subtype": "bot_message", "username": "deploybot", "text": "deployed",
         "ts": "1609459600.000500"}])
    write_json(root / "general" / "2020-12-31.json", [
        {"type": "message", "user": "U2", "text": "last day of the year", "ts": "1609372800.000100"},
        {"type": "message", "user": "U1", "text": "<!here> party at 8 :tada:", "ts": "1609372700.000000"}])
    write_json(root / "random" / "2021-01-01.json", [
        {"type": "message", "user": "U1", "text": "random thought\nsecond line", "ts": "1609459500.000000"}])
    return root


SLACK_TEXT = "@here party at 8 :tada:\nlast day of the year\nhi @Ben Ode, see #random & the site\nrandom thought second line\n"


def test_slack_export_folder_and_zip(tmp_path):
    root = slack_export(tmp_path / "Workspace Slack export")
    chat = read_chat(root)
    assert chat.text == SLACK_TEXT
    r = chat.report
    assert (r.format, r.read, r.kept, r.dropped) == ("slack", 8, 4, {"system": 2, "media": 1, "deleted": 1})
    assert r.senders == {"Ana Lima": 3, "Ben Ode": 1}
    z = tmp_path / "slack.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(root.rglob("*.json")):
            zf.write(p, p.relative_to(root).as_posix())
    assert read_chat(z, "slack").text == SLACK_TEXT and read_chat(z).report.detected
    assert read_chat(root / "random" / "2021-01-01.json").text == "random thought second line\n"  # one day file


# -- plain text -----------------------------------------------------------------------------------
def test_plain_text_is_one_message_a_line(tmp_path):
    f = write(tmp_path / "notes.txt", "first line\n\n  second line  \nשלום עולם\nthe 3.14 of it\n")
    chat = read_chat(f)
    assert chat.text == "first line\nsecond line\nשלום עולם\nthe 3.14 of it\n"
    assert (chat.report.format, chat.report.read, chat.report.kept, chat.report.detected) == ("text", 4, 4, True)
    assert read_chat(f, "text").text == chat.text


def test_detection_of_every_format(tmp_path):
    cases = {
        "whatsapp": write(tmp_path / "w.txt", ANDROID_US),
        "telegram": write_json(tmp_path / "t.json", telegram_chat()),
        "messenger": write_json(tmp_path / "m.json", messenger_thread(MESSENGER_NEWEST_FIRST)),
        "discord": write_json(tmp_path / "d.json", discord_export()),
        "slack": slack_export(tmp_path / "slack"),
        "text": write(tmp_path / "p.txt", "just some text\nwith lines\n"),
    }
    assert set(cases) == set(FORMATS) and set(CHAT_FORMATS) == {"auto", *FORMATS}
    for fmt, path in cases.items():
        r = read_chat(path).report
        assert (r.format, r.detected) == (fmt, True), path


def test_a_named_format_that_does_not_fit_is_refused(tmp_path):
    f = write(tmp_path / "w.txt", ANDROID_US)
    with pytest.raises(UsageError, match="not a telegram export \\(it looks like a whatsapp export\\)"):
        read_chat(f, "telegram")
    p = write(tmp_path / "p.txt", "no timestamps here\n")
    with pytest.raises(UsageError, match="no WhatsApp message lines"):
        read_chat(p, "whatsapp")
    with pytest.raises(UsageError, match="plain text has no sender names"):
        read_chat(p, "text", ["Ana"])


def test_speaker_flag_is_repeatable_and_needs_chat():
    args = build_parser().parse_args(["train", "x.txt", "--chat", "auto", "--speaker", "Ana", "--speaker", "Ben Ode"])
    assert args.speaker == ["Ana", "Ben Ode"] and args.chat == "auto"
    with pytest.raises(UsageError, match="add --chat auto"):
        DataConfig(path="x.txt", speaker=["Ana"]).validate()
    with pytest.raises(UsageError, match="--chat reads a chat export FILE"):
        DataConfig(dataset="timemachine", chat="auto").validate()
    assert DataConfig.from_dict({"path": "x", "chat": "whatsapp", "speaker": ["Ana"]}).speaker == ["Ana"]


# -- bad input: one line, exit 2, nothing written -----------------------------------------------------
def _bad_inputs(d):
    z = d / "photos.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("IMG_0001.jpg", b"\xff\xd8\xff" + bytes(50))
        zf.writestr("README.txt", "holiday photos\n")
    mixed = d / "mixed"
    write(mixed / "a.txt", ANDROID_EU)
    write_json(mixed / "b.json", discord_export())
    ios_lines = "".join(f"[31/12/2020, 21:4{i}:00] Ana: ios {i}\n" for i in range(5))
    android_lines = "".join(f"31/12/2020, 21:4{i} - Ben: android {i}\n" for i in range(5))
    only_media = "12/31/20, 9:41 PM - Ana: <Media omitted>\n12/31/20, 9:42 PM - Ben added Cy\n"
    return [
        ("unknown", write(d / "irc.log", "2020-12-31 21:41:12 <ana> hi\n2020-12-31 21:42:00 <ben> yo\n"
                                         "2020-12-31 21:43:00 <ana> bye\n"), (),
         "its lines start with dates, but not in a chat layout rnnlab knows; name the format with --chat"),
        ("mixed layouts", write(d / "joined.txt", ios_lines + android_lines), (),
         "mixed WhatsApp layouts: 5 lines like '[31/12/2020, 21:40:00]' and 5 like '31/12/2020, 21:40 -'"),
        ("mixed exports", mixed, (), "exports of more than one kind in this folder (discord: b.json; whatsapp: a.txt)"),
        ("json not an export", write_json(d / "settings.json", {"theme": "dark", "messages": 3}), (),
         "a JSON file, but not a chat export rnnlab reads"),
        ("zip without a chat", z, (), "a zip without a chat export in it"),
        ("speaker nobody", write(d / "chat.txt", ANDROID_US), ("--speaker", "Zed"),
         "--speaker 'Zed' matches no sender with messages; the senders are: 'Ana' (3), 'Ben' (2), 'Dana' (1)"),
        ("no message left", write(d / "media.txt", only_media), (),
         "no text message left in this WhatsApp export (2 read; dropped: system 1, media 1)"),
        ("truncated json", write(d / "result.json", json.dumps(telegram_chat())[:200]), (), "not valid JSON"),
    ]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return _bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("i", range(8), ids=["unknown", "mixed-layouts", "mixed-exports", "json-not-export",
                                              "zip-without-chat", "speaker-nobody", "no-message-left",
                                              "truncated-json"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(bad_inputs, tmp_path, capsys, i):
    _, path, extra, message = bad_inputs[i]
    r = run("train", path, "--chat", "auto", *extra, "--out", tmp_path / "run", "--chat-out", tmp_path / "clean.txt",
            "--recipe", "book", "--epochs", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("rnnlab: error: ") and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()
    assert main(["chats", str(path), *extra, "--chat-out", str(tmp_path / "clean.txt")]) == 2  # the same, in-process
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_with_prepare_eval_and_nproc(bad_inputs, tmp_path):
    _, path, _, message = bad_inputs[3]
    r = run("prepare", path, "--chat", "auto", "--out", tmp_path / "prep")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    r = run("train", path, "--chat", "auto", "--nproc", "2", "--out", tmp_path / "run")  # checked before any rank
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


# -- end to end: one speaker's keyboard ---------------------------------------------------------------
X_WORDS = ("banana", "mango", "papaya", "kiwi", "melon", "guava")
Y_WORDS = ("rocket", "planet", "comet", "orbit", "galaxy", "nebula")
TINY = ("--recipe", "book", "--model", "gru", "--embedding-dim", "16", "--hidden-size", "32", "--optimizer", "adam",
        "--lr", "0.02", "--batch-size", "8", "--num-steps", "32", "--predict-every", "0", "--quiet")


def two_speaker_export(n=300, seed=0):
    """A WhatsApp export in which Xena and Yuri write disjoint vocabularies: (export, Xena's text, Yuri's)."""
    rng = random.Random(seed)
    lines = ["12/31/20, 9:00 PM - Messages and calls are end-to-end encrypted. No one outside of this chat, not even "
             "WhatsApp, can read or listen to them. Tap to learn more."]
    texts = {"Xena": [], "Yuri": []}
    for i in range(n):
        h, m = divmod(i, 60)
        stamp = f"1/{1 + i // 100}/21, {1 + h % 12}:{m:02d} {'AM' if h < 12 else 'PM'}"
        who = "Xena" if i % 2 == 0 else "Yuri"
        msg = " ".join(rng.choice(X_WORDS if who == "Xena" else Y_WORDS) for _ in range(rng.randint(3, 6)))
        lines.append(f"{stamp} - {who}: {msg}")
        texts[who].append(msg + "\n")
        if i % 37 == 0:
            lines.append(f"{stamp} - {who}: <Media omitted>")
    return "\n".join(lines) + "\n", "".join(texts["Xena"]), "".join(texts["Yuri"])


@pytest.fixture(scope="module")
def xena(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    export, x_text, y_text = two_speaker_export()
    write(d / "WhatsApp Chat with Yuri.txt", export)
    r = run("train", d / "WhatsApp Chat with Yuri.txt", "--chat", "auto", "--speaker", "xena", *TINY, "--epochs", "15",
            "--out", d / "run", "--chat-out", d / "clean.txt")
    assert r.returncode == 0, r.stderr
    return d, r, x_text, y_text


def test_train_on_one_speaker_records_the_cleaned_text(xena):
    d, r, x_text, _ = xena
    assert ("WhatsApp export (detected, Android layout, lines like '12/31/20, 9:00 PM - Name: text'); 310 messages "
            "read, 150 kept (senders: Xena), 160 dropped (system 1, media 9, speaker 150)") in r.stdout
    assert (d / "run" / "chat.txt").read_text(encoding="utf-8") == x_text
    assert (d / "clean.txt").read_text(encoding="utf-8") == x_text
    data = json.loads((d / "run" / "config.json").read_text())["data"]
    assert (data["chat"], data["speaker"]) == ("auto", ["xena"])
    tokens = json.loads((d / "run" / "vocab.json").read_text())["tokens"]
    assert set(tokens) <= set("".join(X_WORDS)) | {" ", "\n", "<unk>"}  # no digit, colon, capital: no stamp, no name


def test_suggest_comes_from_the_speakers_vocabulary(xena):
    d = xena[0]
    r = run("suggest", d / "run", "ban", "--json")
    assert r.returncode == 0, r.stderr
    answers = {"ban": json.loads(r.stdout)}
    ck = load_for_inference(d / "run", "cpu")  # the same engine in this process, for more prompts
    engine = SuggestEngine(ck.model, ck.tokenizer, SuggestConfig())
    for typed in ("pap", "kiwi m", "mango ", "rocket ", ""):
        answers[typed] = engine.suggest_batch([SuggestRequest(typed, 5)])[0].to_dict()
    for typed, want in (("ban", "banana"), ("pap", "papaya"), ("kiwi m", None), ("mango ", None), ("rocket ", None),
                        ("", None)):
        s = answers[typed]
        words = [c["word"] for c in s["completions"]]
        assert words[0] == want if want else words[0] in X_WORDS, (typed, words)
        likely = [c["word"] for c in s["completions"] if c["prob"] > 0.05]
        assert likely and set(likely) <= set(X_WORDS), (typed, s["completions"])
        for text in words + [c["text"] for c in s["next_chars"]]:
            assert not any(ch.isdigit() or ch in ":/[]-" or ch.isupper() for ch in text), (typed, text)
            assert "xena" not in text.lower() and "yuri" not in text.lower() and text not in Y_WORDS


def test_eval_and_keyboard_read_the_chat(xena):
    d = xena[0]
    export = d / "WhatsApp Chat with Yuri.txt"
    r = run("eval", d / "run", export, "--chat", "auto", "--speaker", "Xena", "--json")
    assert r.returncode == 0, r.stderr
    assert "150 kept (senders: Xena)" in r.stderr and json.loads(r.stdout)["tokens"] == len(xena[2]) - 1  # every character but the first is predicted
    r = run("eval", d / "run", export, "--keyboard", "--chat", "auto", "--speaker", "Xena", "--keyboard-words", "60",
            "--keyboard-presage", "off", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["keyboards"]["rnnlab"]["words"] == 60 and "150 kept (senders: Xena)" in r.stderr
    assert report["keyboards"]["rnnlab"]["ksr"]["1"] > 0.3  # its own words: the keyboard saves keystrokes


def test_resume_reads_the_same_messages(xena, tmp_path):
    d = xena[0]
    shutil.copytree(d / "run", tmp_path / "run")
    r = run("train", "--resume", "--out", tmp_path / "run", "--epochs", "16", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and "150 kept (senders: Xena)" in r.stdout
    export = d / "WhatsApp Chat with Yuri.txt"
    moved = tmp_path / "export.txt"
    shutil.copy(export, moved)
    with open(moved, "a", encoding="utf-8") as f:
        f.write("1/9/21, 9:00 AM - Xena: kiwi kiwi\n")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["data"]["path"] = str(moved)
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    r = run("train", "--resume", "--out", tmp_path / "run", "--epochs", "17", "--quiet")
    assert r.returncode == 2 and "now gives other messages than the run" in r.stderr and r.stderr.count("\n") == 1


def test_fine_tune_and_prepare_on_a_chat(xena, tmp_path):
    d, _, x_text, y_text = xena
    export = d / "WhatsApp Chat with Yuri.txt"
    r = run("train", export, "--chat", "whatsapp", "--speaker", "Yuri", "--init-from", d / "run", *TINY, "--epochs", "1",
            "--out", tmp_path / "ft")
    assert r.returncode == 0, r.stderr
    assert "fine-tuning" in r.stdout and "150 kept (senders: Yuri)" in r.stdout
    assert (tmp_path / "ft" / "chat.txt").read_text(encoding="utf-8") == y_text
    r = run("prepare", export, "--chat", "auto", "--speaker", "Xena", "--out", tmp_path / "prep")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "prep" / "chat.txt").read_text(encoding="utf-8") == x_text
    meta = json.loads((tmp_path / "prep" / "prepared.json").read_text())
    assert meta["tokens"] == len(x_text) and meta["source"] == str(export) and meta["chat"]["speakers"] == ["Xena"]


def test_chats_lists_the_senders(xena):
    d = xena[0]
    r = run("chats", d / "WhatsApp Chat with Yuri.txt")
    assert r.returncode == 0, r.stderr
    assert "  150  Xena\n  150  Yuri\n" in r.stdout and "--speaker Xena" in r.stdout
    r = run("chats", d / "WhatsApp Chat with Yuri.txt", "--json")
    assert json.loads(r.stdout)["senders"] == {"Xena": 150, "Yuri": 150}


def test_budget_run_on_a_chat(xena, tmp_path):
    """The default recipe with a (short) time budget: a smoke run that cannot fail on a slow machine."""
    d, _, x_text, _ = xena
    r = run("train", d / "WhatsApp Chat with Yuri.txt", "--chat", "auto", "--speaker", "Xena", "--budget", "3s",
            "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "chat.txt").read_text(encoding="utf-8") == x_text
