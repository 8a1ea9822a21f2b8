"""``rnnlab suggest`` and ``rnnlab serve``: argument parsing only; the work is in the library.

FastAPI and uvicorn are imported inside the commands, so ``rnnlab --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys

from ..cli_args import add_settings, build
from ..config import AdaptConfig, InferenceConfig, ServeConfig, SuggestConfig, Threads
from ..errors import RnnlabError, UsageError
from ..io import json_text
from ..precision import SERVING


def add_parsers(sub) -> None:
    """Register the ``suggest`` and ``serve`` subcommands on ``rnnlab``'s subparsers."""
    p = sub.add_parser("suggest", help="suggest the next characters and completions of the current word",
                       description="Print the top-k next characters and the top-k completions of the word "
                                   "being typed (the next words when TEXT ends with a space or punctuation; "
                                   "an empty TEXT gives the first words).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    p.add_argument("text", metavar="TEXT", help='the text typed so far, e.g. "the time trav"')
    add_settings(p, SuggestConfig)
    p.add_argument("--json", action="store_true", help="print the suggestions as one JSON object")
    add_settings(p, InferenceConfig)
    add_settings(p, Threads)
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("serve", help="serve suggestions and generation over HTTP, with a web page",
                       description="Run the predictive-keyboard web page and JSON API (POST /v1/suggest, "
                                   "/v1/generate, /v1/generate/stream; GET /healthz, /openapi.json).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    add_settings(p, InferenceConfig, help_default={"precision": SERVING})
    add_settings(p, Threads)
    add_settings(p, ServeConfig)
    add_settings(p, SuggestConfig, skip=("k",))
    a = p.add_argument_group("online adaptation", "--adapt: each client's own copy of the model learns from the "
                                                   "text that client types (dynamic evaluation; in memory only, "
                                                   "never written to the checkpoint; POST /v1/adapt/reset forgets a client)")
    a.add_argument("--adapt", action="store_true", help="adapt to each client (answers one request at a time)")
    add_settings(a, AdaptConfig, prefix="adapt_")
    p.set_defaults(func=cmd_serve)


def cmd_suggest(args: argparse.Namespace) -> int:
    from ..checkpoint import load_for_inference
    from ..config import check_text
    from ..runtime import use_threads
    from ..suggest import SuggestRequest, load_engine

    scfg, inference, threads = build(args, SuggestConfig), build(args, InferenceConfig), build(args, Threads)
    for settings in (scfg, inference, threads):
        settings.validate()
    check_text(args.text)
    args.threads_note = use_threads(threads.threads, small_steps=True)  # said by rnnlab.cli.main on success
    ckpt = load_for_inference(args.checkpoint, inference, log=_say)
    engine = load_engine(ckpt, scfg, log=lambda msg: print(msg, file=sys.stderr))  # the served search
    s = engine.suggest_batch([SuggestRequest(args.text, scfg.k)])[0]  # in this thread: no worker to stop
    if args.json:
        print(json_text(s.to_dict(), ensure_ascii=False))  # a non-finite number is null: always valid JSON
        return 0
    shown = {" ": "␣", "\n": "↵", "\t": "⇥"}
    print("next characters: " + "  ".join(f"{shown.get(c.text, c.text)} {c.prob:.1%}" for c in s.next_chars))
    title = f'completions of "{s.partial}"' if s.mode == "complete" else "next words"
    print(f"{title}:")
    width = max((len(c.word) for c in s.completions), default=0)
    for c in s.completions:
        print(f"  {c.word:<{width}}  {c.prob:7.2%}  (append {c.append!r})")
    if not s.completions:
        print("  (none within the search bounds)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    serve, threads, scfg = build(args, ServeConfig), build(args, Threads), build(args, SuggestConfig)
    adapt = build(args, AdaptConfig, prefix="adapt_")
    for settings in (serve, threads, scfg):
        settings.validate()
    adapt.validate(prefix="adapt_")  # given without --adapt, a wrong value is still wrong
    adapt = adapt if args.adapt else None
    inference = serving_inference(args, adapt is not None)
    try:
        import uvicorn
    except ImportError:
        raise RnnlabError("`rnnlab serve` needs fastapi and uvicorn: pip install fastapi uvicorn") from None
    import torch

    from ..checkpoint import load_for_inference
    from ..runtime import use_threads
    from .app import create_app
    from .protocol import bounded_protocol

    note = use_threads(threads.threads, small_steps=True)
    ckpt = load_for_inference(args.checkpoint, inference, log=_say)
    sock = _bind(serve.host, serve.port)
    app = create_app(ckpt, serve, scfg, adapt, allowed_hosts=allowed_hosts(serve.host, serve.allowed_host),
                     log=lambda msg: print(msg, file=sys.stderr))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level=serve.log_level, access_log=False,
                            http=bounded_protocol(timeout=serve.read_timeout))
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    print(f"rnnlab: serving {args.checkpoint} on http://{shown}:{port}/ (Ctrl-C stops; "
          f"{note or f'{torch.get_num_threads()} torch threads'})", flush=True)
    server.run(sockets=[sock])
    return 0


def serving_inference(args: argparse.Namespace, adapting: bool) -> InferenceConfig:
    """How the server runs the model: ``--precision`` / ``--int8`` as given, else the measured
    default (``precision.SERVING``: fp32, bf16, auto or int8); float32 with ``--adapt`` (each
    client's copy takes steps too small for bfloat16 weights, and an int8 copy cannot learn)."""
    inference = build(args, InferenceConfig)
    inference.validate()
    given = "precision" in vars(args)
    if adapting and inference.int8:
        raise UsageError("--adapt trains each client's copy of the model; an int8 copy cannot be trained "
                         "(drop --int8 or --adapt)")
    if adapting and inference.precision == "bf16":
        raise UsageError("--adapt trains each client's copy of the model in float32 (its small steps vanish in "
                         "bfloat16 weights); drop --precision bf16 or --adapt")
    if adapting:
        return inference.replace(precision="fp32")
    if inference.int8 or given:
        return inference
    return inference.replace(int8=True) if SERVING == "int8" else inference.replace(precision=SERVING)


def _say(msg: str) -> None:
    print(f"rnnlab: {msg}", file=sys.stderr, flush=True)


def allowed_hosts(host: str, extra: list[str]) -> list[str] | None:
    """The ``Host`` headers to accept: this server's own names (the bound address and, on loopback,
    localhost) plus ``extra``; None (accept any) for a wildcard address without ``--allowed-host``
    (every address of the machine is its own then) or with ``--allowed-host '*'``."""
    if "*" in extra or (host in ("0.0.0.0", "::", "") and not extra):
        return None
    names = {f"[{host}]" if ":" in host else host, "localhost", "127.0.0.1", "[::1]"} | set(extra)
    return sorted(names)


def _bind(host: str, port: int):
    """A listening-ready TCP socket on ``host:port`` (port 0: any free port, printed at start)."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r}: cannot resolve it ({e.strerror}); use an address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise RnnlabError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from None
    return sock
