"""The command line as the README writes it and as users type it: every `rnnlab ...` line of the
README is parsed by the real argument parser (and the cheap ones run on tiny data); positionals
among options; `--threads` everywhere; prefixed flags named as typed; one program name."""
from guards import HANG_GUARD
import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
CORPUS = ("the time traveller for so it will be convenient to speak of him was expounding a recondite "
          "matter to us. his grey eyes shone and twinkled, and his usually pale face was flushed.\n") * 12
PLACEHOLDERS = {"NAME": "timemachine", "S": "60", "M": "gru", "T": "0.7", "N": "2", "TEXT": "the ti", "TIME": "60s"}
RUN = ("generate", "suggest", "export", "prepare", "datasets", "eval")  # cheap on a tiny run: executed


def _readme_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `rnnlab`) of every command the README shows: in bash blocks (continued
    lines joined, comments dropped, `&&` chains split; `torchrun ... -m rnnlab` too) and in inline
    code spans; `$BOOK` as the README defines it; every variant of an optional `[A | B]` group."""
    text = README.read_text(encoding="utf-8")
    book = re.search(r'`BOOK="([^"]+)"', text).group(1)
    found, fence = [], None
    for n, line in enumerate(text.replace("\\\n", " ").splitlines(), 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence == "bash":
            for seg in line.split("&&"):
                found.append((f"README line ~{n}", seg))
    for m in re.finditer(r"`(rnnlab [^`]+)`", text):
        found.append((f"README line {text[:m.start()].count(chr(10)) + 1}", m.group(1).replace("\n", " ")))
    out = []
    for where, seg in found:
        seg = re.sub(r"\s#\s.*$", "", seg.replace("$BOOK", book).replace("<flags>", "").replace("...", ""))
        m = re.match(r"(?:.*\s-m\s+|\s*)rnnlab\s+(.*)$", seg)
        if m and m.group(1).strip():  # (`rnnlab ...` alone names the command line, not a command)
            variants = _variants(m.group(1))
            # every variant is parsed; the shortest and the longest (all options given) are also run
            out += [(where, v, i in (0, len(variants) - 1)) for i, v in enumerate(variants)]
    return out


def _variants(s: str) -> list[list[str]]:
    """Every spelling of ``s`` with its optional groups ``[A | B]`` left out or filled in."""
    m = re.search(r"\[([^\[\]]*)\]", s)
    if not m:
        return [shlex.split(s)]
    choices = [""] + [c.strip() for c in m.group(1).split("|")]
    return list(itertools.chain.from_iterable(_variants(s[:m.start()] + c + s[m.end():]) for c in choices))


COMMANDS = _readme_commands()


def test_the_readme_shows_many_commands():
    assert len(COMMANDS) > 40 and {"train", "generate", "eval", "suggest", "serve", "export", "prepare",
                                   "datasets"} <= {argv[0] for _, argv, _ in COMMANDS if argv}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny run with a validation split, its text, and a working directory for outputs."""
    d = tmp_path_factory.mktemp("forms")
    (d / "t.txt").write_text(CORPUS)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(d / "t.txt"), "--recipe", "book", "--model", "lstm",
                        "--hidden-size", "16", "--batch-size", "4", "--num-steps", "10", "--epochs", "2",
                        "--val-fraction", "0.2", "--predict-every", "0", "--out", str(d / "run"), "--quiet"],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    return d


def _concrete(argv: list[str], tiny: Path) -> list[str]:
    """The README's placeholders and example paths made real: runs -> the tiny run, texts -> its text."""
    out = []
    for w in argv:
        if w == "DIR" or w.startswith("runs/"):
            w = str(tiny / "run")
        elif w == "FILE" or w.endswith(".txt"):
            w = str(tiny / "t.txt")
        elif w == "OUT":
            w = str(tiny / "out")
        out.append(PLACEHOLDERS.get(w, w))
    return out


_RAN: set = set()


@pytest.mark.parametrize("where, argv, run_it", COMMANDS, ids=[" ".join(a)[:60] for _, a, _ in COMMANDS])
def test_every_readme_command_parses_and_the_cheap_ones_run(tiny, where, argv, run_it):
    """`rnnlab eval DIR --keyboard FILE`, the README's form, was once refused ("unrecognized
    arguments"): every line the README shows must be one the CLI takes."""
    if len(argv) == 1:  # a command named in the prose: it exists
        assert argv[0] in build_parser()._subparsers._group_actions[0].choices, where
        return
    args = _concrete(argv, tiny)
    try:
        build_parser().parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{where}: `rnnlab {' '.join(argv)}` is refused by the parser (exit {e.code})")
    if run_it and args[0] in RUN and "--dataset" not in args and tuple(args) not in _RAN:
        _RAN.add(tuple(args))
        if args[0] == "export":
            pytest.importorskip("onnxruntime")
        r = subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True, timeout=HANG_GUARD,
                           cwd=tiny, env=dict(os.environ, PYTHONIOENCODING="utf-8"))
        assert r.returncode == 0, f"{where}: `rnnlab {' '.join(argv)}`: {r.stderr[-1500:]}"


# -- positionals among options -------------------------------------------------------------------

def test_positionals_anywhere_among_the_options(tiny):
    for args in (["eval", str(tiny / "run"), "--keyboard", str(tiny / "t.txt"), "--keyboard-words", "20", "--json"],
                 ["generate", "--length", "5", str(tiny / "run")],
                 ["suggest", "--k", "3", str(tiny / "run"), "the ti"],
                 ["prepare", "--out", str(tiny / "prep"), str(tiny / "t.txt")]):
        r = subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True, text=True, timeout=HANG_GUARD)
        assert r.returncode == 0, (args, r.stderr)


# -- one program name, flags as typed -------------------------------------------------------------

def _err(*args):
    r = subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


def test_usage_errors_name_the_program_once():
    assert _err("--bogus").startswith("rnnlab: error:")
    assert _err("train", "--epochs", "x").startswith("rnnlab train: error:")
    assert "rnnlab rnnlab" not in _err("--bogus") + _err("eval")


@pytest.mark.parametrize("args, fragment", [
    (["serve", "DIR", "--adapt", "--adapt-clients", "0"], "--adapt-clients must be between 1 and 1024, got 0"),
    (["serve", "DIR", "--adapt-chunk", "0"], "--adapt-chunk must be between 1 and"),  # checked without --adapt too
    (["eval", "DIR", "--dynamic", "--dynamic-lr", "0"], "--dynamic-lr must be > 0"),
    (["eval", "DIR", "--dynamic-chunk", "0"], "--dynamic-chunk must be between 1 and"),
    (["eval", "DIR", "--keyboard", "--keyboard-words", "-1"], "--keyboard-words must be between 0 and"),
    (["eval", "DIR", "--keyboard", "--keyboard-preamble", "100000"], "--keyboard-preamble must be between 0 and 5000"),
    (["serve", "DIR", "--generate-workers", "0"], "--generate-workers must be between 1 and"),
    (["serve", "DIR", "--read-timeout", "0"], "--read-timeout must be > 0"),
])
def test_prefixed_and_serve_flags_are_named_as_typed(tiny, args, fragment):
    err = _err(*[str(tiny / "run") if a == "DIR" else a for a in args])
    assert fragment in err, err


# -- --threads ------------------------------------------------------------------------------------

def test_threads_is_one_setting_of_every_computing_command():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("train", "prepare", "generate", "eval", "export", "suggest", "serve"):
        assert "--threads" in commands[name].format_help(), name


def _flag_helps(command: str, flags: tuple[str, ...]) -> dict[str, str]:
    commands = build_parser()._subparsers._group_actions[0].choices
    return {a.option_strings[0]: a.help for a in commands[command]._actions
            if a.option_strings and a.option_strings[0] in flags}


def test_inference_flags_are_declared_once_for_every_command():
    """--device, --int8 and --precision come from one settings class (``InferenceConfig``): the same
    flags and help in generate, suggest, eval and serve (serve shows its measured precision
    default), --device alone in words, and no command declares them by hand."""
    import inspect

    from rnnlab.config import InferenceConfig
    from rnnlab.serve import app

    flags = ("--device", "--int8", "--precision")
    want = _flag_helps("generate", flags)
    assert set(want) == set(flags)
    assert want["--int8"].startswith(InferenceConfig.__dataclass_fields__["int8"].metadata["help"])
    for command in ("suggest", "eval"):
        assert _flag_helps(command, flags) == want, command
    serve = _flag_helps("serve", flags)
    assert {k: v for k, v in serve.items() if k != "--precision"} == {k: want[k] for k in ("--device", "--int8")}
    assert _flag_helps("words", flags) == {"--device": want["--device"]}
    root = Path(__file__).resolve().parent.parent / "rnnlab"
    by_hand = [f"{p.relative_to(root)}: {flag}" for p in root.rglob("*.py") for flag in ('"--device"', '"--precision"')
               if flag in p.read_text()]
    int8 = [p.name for p in root.rglob("*.py") if '"--int8"' in p.read_text()]
    assert by_hand == [] and int8 == ["cli_inference.py"], (by_hand, int8)  # export --int8: also an int8 ONNX file
    assert '"cpu" if' not in "".join(p.read_text() for p in root.rglob("*.py"))  # the int8 device rule: once
    # the server's settings: one ServeConfig, its flags generated (create_app repeats no default)
    assert list(inspect.signature(app.create_app).parameters) == ["checkpoint", "serve", "suggest", "adapt",
                                                                  "allowed_hosts", "log"]


def test_the_int8_device_rule_is_one_function(monkeypatch):
    """``auto`` is CUDA where there is one, except under --int8 (the int8 copy runs on the CPU only);
    --int8 with another device, or with bf16, is refused by the settings themselves."""
    import torch

    from rnnlab.config import InferenceConfig
    from rnnlab.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert InferenceConfig().torch_device().type == "cuda"
    assert InferenceConfig(int8=True).torch_device().type == "cpu"
    assert InferenceConfig(device="cpu", int8=True).torch_device().type == "cpu"
    for bad, fragment in ((InferenceConfig(device="cuda", int8=True), "--int8 runs on the CPU; drop --device cuda"),
                          (InferenceConfig(int8=True, precision="bf16"), "two different copies")):
        with pytest.raises(UsageError, match=fragment):
            bad.validate()


THREADS = r"""
import sys, torch, rnnlab.cli as cli
code = cli.main(sys.argv[1:])
print("THREADS", torch.get_num_threads(), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("args, threads, said", [
    (["generate", "RUN", "--length", "5"], 1, True),  # one sample: one-token steps
    (["suggest", "RUN", "the ti"], 1, True),
    (["eval", "RUN", "--keyboard", "TEXT", "--keyboard-words", "20"], 1, True),
    (["eval", "RUN", "--dynamic"], 1, True),
    (["generate", "RUN", "--length", "5", "--threads", "2"], 2, False),  # asked: no notice
    (["eval", "RUN", "--keyboard", "TEXT", "--keyboard-words", "20", "--threads", "3"], 3, False),
])
def test_small_step_commands_choose_one_thread_and_say_so(tiny, args, threads, said):
    args = [str(tiny / "run") if a == "RUN" else str(tiny / "t.txt") if a == "TEXT" else a for a in args]
    r = subprocess.run([sys.executable, "-c", THREADS, *args], capture_output=True, text=True, timeout=HANG_GUARD,
                       env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert r.returncode == 0, r.stderr
    assert f"THREADS {threads}" in r.stderr
    assert ("1 torch thread (the work is one-token steps; --threads N to change)" in r.stderr) == said, r.stderr


# -- eval --keyboard: what it may be given ----------------------------------------------------------

def test_keyboard_eval_of_a_text_without_words_is_one_line_and_never_nan(tiny, tmp_path):
    (tmp_path / "nowords.txt").write_text("... !!! ??? --- ,,, ;;; ''' \n" * 20)
    err = _err("eval", tiny / "run", "--keyboard", tmp_path / "nowords.txt", "--json")
    assert "has no words to type" in err, err


def test_ratios_to_zero_are_null_not_nan_or_infinity():
    from rnnlab.keyboard.simulate import ratios

    zero = {"ksr": {1: 0.0}, "keystrokes_per_char": {1: 1.0}, "next_word_top1": 0.0, "next_word_top3": 0.0,
            "completion_recall": {1: None}}
    some = {"ksr": {1: 0.2}, "keystrokes_per_char": {1: 0.8}, "next_word_top1": 0.1, "next_word_top3": 0.0,
            "completion_recall": {1: 0.5}}
    r = ratios(some, zero)
    assert r["ksr"][1] is None and r["next_word_top1"] is None and r["next_word_top3"] is None
    assert r["keystrokes_per_char"][1] == pytest.approx(0.8) and r["completion_recall"][1] is None


def test_a_long_typed_piece_never_asks_a_keyboard_more_than_a_request_holds():
    """One piece of 30,000 characters (a long text typed as few pieces): its context restarts
    nearer before it passes the limit of a request, so the engine never refuses it midway."""
    from rnnlab.config import MAX_TEXT_CHARS
    from rnnlab.keyboard.simulate import evaluate_keyboard

    longest = []

    class Recorder:
        name = "recorder"

        def completions_batch(self, queries, k, streams=None):
            longest.append(max(len(c) + len(p) for c, p in queries))
            return [[] for _ in queries]

        def completions(self, context, partial, k):
            return self.completions_batch([(context, partial)], k)[0]

    text = "the time traveller smiled at us. " * 1000  # 33,000 characters
    r = evaluate_keyboard(Recorder(), text, segments=1, preamble_chars=5000, history="x " * 3000)
    assert r["words"] == 6000 and max(longest) <= MAX_TEXT_CHARS
