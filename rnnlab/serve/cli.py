"""``rnnlab suggest`` and ``rnnlab serve``: argument parsing only; the work is in the library.

FastAPI and uvicorn are imported inside the commands, so ``rnnlab --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..cli_args import add_settings, build
from ..config import AdaptConfig, SuggestConfig
from ..errors import RnnlabError, UsageError


def add_parsers(sub) -> None:
    """Register the ``suggest`` and ``serve`` subcommands on ``rnnlab``'s subparsers."""
    p = sub.add_parser("suggest", help="suggest the next characters and completions of the current word",
                       description="Print the top-k next characters and the top-k completions of the word "
                                   "being typed (the next words when TEXT ends with a space or punctuation).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    p.add_argument("text", metavar="TEXT", help='the text typed so far, e.g. "the time trav"')
    add_settings(p, SuggestConfig)
    p.add_argument("--json", action="store_true", help="print the suggestions as one JSON object")
    p.add_argument("--device", default="auto")
    p.add_argument("--int8", action="store_true", help="run an int8 copy of the model on the CPU (about 4x less memory)")
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("serve", help="serve suggestions and generation over HTTP, with a web page",
                       description="Run the predictive-keyboard web page and JSON API (POST /v1/suggest, "
                                   "/v1/generate, /v1/generate/stream; GET /healthz, /openapi.json).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", metavar="DIR", help="a run directory written by `rnnlab train --out DIR`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (the default serves this machine only)")
    p.add_argument("--int8", action="store_true", help="serve an int8 copy of the model on the CPU (about 4x less memory)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0 = any free port)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per request; one suits the small matrices of a single step")
    p.add_argument("--max-body-bytes", type=int, default=64 * 1024, help="larger request bodies get 413")
    add_settings(p, SuggestConfig, skip=("k",))
    p.add_argument("--allowed-host", action="append", dest="allowed_hosts", metavar="HOST",
                   help="a Host header to accept besides the bound address and localhost (repeatable; "
                        "'*' accepts any: only behind a proxy that checks it)")
    p.add_argument("--max-batch", type=int, default=64,
                   help="most suggest requests answered together (1 = one at a time, no batching)")
    p.add_argument("--suggest-worker", choices=("process", "thread"), default="process",
                   help="where suggestions are computed: a process of their own (the search and the HTTP "
                        "event loop run on two cores) or a thread of the server (they share one GIL)")
    a = p.add_argument_group("online adaptation", "--adapt: each client's own copy of the model learns from the "
                                                   "text that client types (dynamic evaluation; in memory only, "
                                                   "never written to the checkpoint; POST /v1/adapt/reset forgets a client)")
    a.add_argument("--adapt", action="store_true", help="adapt to each client (answers one request at a time)")
    add_settings(a, AdaptConfig, prefix="adapt_")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve)


def cmd_suggest(args: argparse.Namespace) -> int:
    from ..checkpoint import load_for_inference
    from ..config import check_text
    from ..runtime import select_device
    from ..suggest import SuggestRequest, load_engine

    scfg = build(args, SuggestConfig)
    scfg.validate()
    check_text(args.text)
    ckpt = load_for_inference(args.checkpoint, select_device("cpu" if args.int8 and args.device == "auto" else args.device), args.int8)
    engine = load_engine(ckpt, scfg, log=lambda msg: print(msg, file=sys.stderr))  # the served search
    s = engine.suggest_batch([SuggestRequest(args.text, scfg.k)])[0]  # in this thread: no worker to stop
    if args.json:
        print(json.dumps(s.to_dict(), ensure_ascii=False))
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
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {args.threads}")
    if args.max_body_bytes < 1024:
        raise UsageError(f"--max-body-bytes must be at least 1024, got {args.max_body_bytes}")
    if args.max_batch < 1:
        raise UsageError(f"--max-batch must be a positive integer, got {args.max_batch}")
    try:
        import uvicorn
    except ImportError:
        raise RnnlabError("`rnnlab serve` needs fastapi and uvicorn: pip install fastapi uvicorn") from None
    import torch

    from ..checkpoint import load_for_inference
    from ..runtime import select_device
    from .app import create_app

    scfg = build(args, SuggestConfig)
    scfg.validate()
    adapt = build(args, AdaptConfig, prefix="adapt_") if args.adapt else None
    if adapt is not None:
        adapt.validate()
        if args.int8:
            raise UsageError("--adapt trains each client's copy of the model; an int8 copy cannot be trained "
                             "(drop --int8 or --adapt)")
    torch.set_num_threads(args.threads)
    ckpt = load_for_inference(args.checkpoint, select_device("cpu" if args.int8 and args.device == "auto" else args.device), args.int8)
    sock = _bind(args.host, args.port)
    app = create_app(ckpt, max_body_bytes=args.max_body_bytes, max_batch=args.max_batch, suggest=scfg,
                     suggest_process=args.suggest_worker == "process", suggest_threads=args.threads,
                     allowed_hosts=allowed_hosts(args.host, args.allowed_hosts or []), adapt=adapt,
                     log=lambda msg: print(msg, file=sys.stderr))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    print(f"rnnlab: serving {args.checkpoint} on http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    server.run(sockets=[sock])
    return 0


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
