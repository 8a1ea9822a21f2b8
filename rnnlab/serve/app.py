"""The HTTP API and the predictive-keyboard page, as a FastAPI app.

    GET  /                     the page (static files served by the app itself: no CDN)
    GET  /healthz              liveness + which model is loaded
    GET  /openapi.json         the OpenAPI schema
    POST /v1/suggest           {text, k, client}                  -> next characters + word completions
    POST /v1/generate          {prefix, length, temperature, top_k, top_p, seed} -> continuation
    POST /v1/generate/stream   same body -> NDJSON lines {"text": token} ..., then {"done": true, ...}

Every request is validated before it reaches the model: a body over ``max_body_bytes`` is refused
with 413 before it is read; malformed JSON is a 400 and out-of-range values a 422, each with a
one-line ``error`` message. Suggest requests are queued to the engine, whose worker answers all
pending ones together (cross-request batching, see ``rnnlab.suggest``): a thread of this process,
or with ``suggest_process=True`` (``rnnlab serve``'s default) a process of its own, so that the
search and the event loop do not share one GIL (``rnnlab.serve.backend``); the endpoint awaits its
answer on the event loop. The generate endpoints are sync and run in the thread pool; the model
is only read, so they run concurrently with the suggestion worker.
"""
from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import __version__
from ..checkpoint import Checkpoint, load_checkpoint
from ..errors import RnnlabError
from ..sampling import generate_ids
from ..suggest import SuggestEngine, StateCache
from .backend import ProcessBackend, ThreadBackend, WorkerUnavailable
from .streaming import iter_generate_ids

STATIC = Path(__file__).resolve().parent / "static"

MAX_TEXT_CHARS = 4000  # text of /v1/suggest and prefix of /v1/generate
MAX_K = 20
MAX_LENGTH = 1000  # tokens generated per request
MAX_TEMPERATURE = 10.0
MAX_CLIENT_ID = 64
DEFAULT_MAX_BODY_BYTES = 64 * 1024  # the longest text, fully \u-escaped, still fits


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate); send UTF-8 text") from None
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuggestRequest(_Body):
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS, description="the text typed so far")]
    k: Annotated[int, Field(ge=1, le=MAX_K, description="how many characters and completions")] = 5
    client: Annotated[str, Field(max_length=MAX_CLIENT_ID,
                                 description="an id per typist (e.g. per browser tab): whose state cache to use")] = ""

    _check_text = field_validator("text", "client")(_utf8)


class GenerateRequest(_Body):
    prefix: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, description="text to continue")]
    length: Annotated[int, Field(ge=0, le=MAX_LENGTH, description="tokens to generate")] = 100
    temperature: Annotated[float, Field(ge=0, le=MAX_TEMPERATURE, allow_inf_nan=False,
                                        description="0 = greedy; > 0 samples")] = 0.0
    top_k: Annotated[int, Field(ge=0, le=1_000_000, description="sample among the k most likely (0 = all)")] = 0
    top_p: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, description="nucleus mass")] = 1.0
    seed: Annotated[int | None, Field(ge=0, le=2**63 - 1, description="seed for sampling")] = None

    _check_text = field_validator("prefix")(_utf8)


class TokenProbOut(BaseModel):
    text: str
    prob: float


class CompletionOut(BaseModel):
    word: str
    append: str
    prob: float
    logprob: float


class SuggestResponse(BaseModel):
    mode: str
    partial: str
    next_chars: list[TokenProbOut]
    completions: list[CompletionOut]
    model_text: str
    context_tokens: int
    beam_steps: int
    elapsed_ms: float


class GenerateResponse(BaseModel):
    prefix: str
    text: str  # the continuation only: append it to the prefix
    tokens: int


@dataclass
class _Prepared:
    ids: list[int]
    joiner: str  # what goes between the prefix and the first generated token


class BodyLimit:
    """ASGI middleware: read the request body up to ``max_bytes`` and refuse a larger one with 413
    (by its Content-Length before reading anything, or as soon as a chunked body passes the limit)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await _send_error(send, 400, "Content-Length is not a number")
            if n > self.max_bytes:
                return await _send_error(send, 413, f"request body of {n} bytes is over the limit of {self.max_bytes}")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await _send_error(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as a streaming response does

        await self.app(scope, replay, send)


class SuggestFastPath:
    """ASGI middleware: answer a well-formed ``POST /v1/suggest`` directly, without the framework.

    A keystroke is the server's hottest request, and FastAPI's path through its middleware stack,
    routing and dependency solving costs more CPU than the HTTP parsing itself. A request with a
    JSON body that ``SuggestRequest`` accepts (the same ``json.loads`` + model validation the route
    does) is answered here with the route's exact response; anything else (malformed JSON, an
    invalid field, another content type) goes on to the route, so every error is the framework's
    own. The route stays the documented one (OpenAPI). Sits inside ``BodyLimit``.
    """

    def __init__(self, app, answer):
        self.app, self.answer = app, answer  # answer(SuggestRequest) -> (status, JSON bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/suggest" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
        message = await receive()  # BodyLimit hands the whole body in one message
        body = message.get("body", b"") if message["type"] == "http.request" else None
        req = None
        if body is not None and not message.get("more_body", False) and \
                ctype.split(b";")[0].strip().lower() == b"application/json":
            try:
                req = SuggestRequest.model_validate(json.loads(body))
            except ValueError:  # json.JSONDecodeError and pydantic.ValidationError: the route explains
                req = None
        if req is None:
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return message
                return await receive()

            return await self.app(scope, replay, send)
        status, payload = await self.answer(req)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(payload)).encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


def _error_json(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":")).encode()


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _validation_message(errors: list[dict]) -> tuple[int, str, list[dict]]:
    detail = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in errors]
    if any(d["type"] == "json_invalid" for d in detail):
        return 400, "malformed JSON body: " + "; ".join(d["msg"] for d in detail), detail
    parts = [f"{'.'.join(d['loc'][1:]) or 'body'}: {d['msg']}" for d in detail]
    return 422, "invalid request: " + "; ".join(parts), detail


def create_app(checkpoint: str | Path | Checkpoint, device: str | torch.device = "cpu",
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, cache_clients: int = 256,
               cache_per_client: int = 16, beam_width: int = 8, max_word_length: int = 24,
               max_batch: int = 64, suggest_process: bool = False, suggest_threads: int = 1,
               suggest_fast_path: bool = True) -> FastAPI:
    """The app for one checkpoint (a directory, or an already loaded ``Checkpoint``).

    ``suggest_process=True`` answers ``/v1/suggest`` from an engine in a child process (with
    ``suggest_threads`` torch threads), so that the search does not take turns with the event
    loop on one GIL (see ``rnnlab.serve.backend``); the default keeps it in this process.
    ``suggest_fast_path`` answers valid suggest requests before the framework (``SuggestFastPath``).
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device)
    model, vocab = ckpt.model, ckpt.vocab
    model.eval()
    engine_kwargs = dict(beam_width=beam_width, max_word_length=max_word_length, max_batch=max_batch)
    engine = SuggestEngine(model, vocab, ckpt.data_config.preset, cache=StateCache(cache_clients, cache_per_client),
                           **engine_kwargs)
    backend = (ProcessBackend(ckpt, threads=suggest_threads, cache_clients=cache_clients,
                              cache_per_client=cache_per_client, **engine_kwargs)
               if suggest_process else ThreadBackend(engine))
    info = {
        "status": "ok", "rnnlab_version": __version__,
        "model": {"model": ckpt.model_config.model, "impl": ckpt.model_config.impl,
                  "hidden_size": ckpt.model_config.hidden_size, "num_layers": ckpt.model_config.num_layers,
                  "vocab_size": len(vocab)},
        "data": {"source": ckpt.info.get("source"), "preset": ckpt.data_config.preset,
                 "token": "char" if vocab.separator == "" else "word"},
        "limits": {"max_text_chars": MAX_TEXT_CHARS, "max_k": MAX_K, "max_length": MAX_LENGTH,
                   "max_body_bytes": max_body_bytes},
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        backend.close()

    app = FastAPI(title="rnnlab", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Suggestions and generation from an rnnlab language model.")
    app.state.engine = engine
    app.state.suggest_backend = backend
    app.state.checkpoint = ckpt
    async def answer_suggest(req: SuggestRequest) -> tuple[int, bytes]:
        """The response to a valid suggest request: (status, JSON body)."""
        # queued to the engine's batching worker; the event loop awaits it without a thread per request
        start = time.perf_counter()
        try:
            body = await backend.suggest(req.text, req.k, req.client)  # a JSON object: b'{...}'
        except WorkerUnavailable as exc:  # the suggestion process died or is restarting: not the client's fault
            return 503, _error_json(str(exc))
        except RnnlabError as exc:
            return 400, _error_json(str(exc))
        elapsed = json.dumps((time.perf_counter() - start) * 1e3)
        return 200, body[:-1] + b',"elapsed_ms":' + elapsed.encode() + b"}"

    if suggest_fast_path:
        app.add_middleware(SuggestFastPath, answer=answer_suggest)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # the outer one: every body is bounded first

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, message, detail = _validation_message(list(exc.errors()))
        return JSONResponse({"error": message, "detail": detail}, status_code=status)

    @app.exception_handler(RnnlabError)
    async def _rnnlab_error(request: Request, exc: RnnlabError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    def prepare(prefix: str) -> _Prepared:
        mtext = engine.model_text(prefix)
        tokens = mtext.split() if engine.word_level else list(mtext)
        ids = vocab.encode(tokens)
        if not ids and not engine.word_level:
            ids = list(engine.start_ids)
        if not ids:
            raise RnnlabError("the prefix has no token this model can read; type some words")
        joiner = vocab.separator if (vocab.separator and not prefix[-1].isspace()) else ""
        return _Prepared(ids, joiner)

    def rng(seed: int | None) -> torch.Generator | None:
        return None if seed is None else torch.Generator(device=model.device).manual_seed(seed)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """200 and ``status: ok`` while suggestions can be answered; 503 and ``degraded`` while the
        suggestion process restarts (or could not be restarted)."""
        worker = backend.status()
        ok = worker["state"] == "ready"
        return JSONResponse({**info, "status": "ok" if ok else "degraded", "suggest_worker": worker},
                            status_code=200 if ok else 503)

    @app.post("/v1/suggest", response_model=SuggestResponse)
    async def suggest(req: SuggestRequest) -> Response:
        # valid requests are normally answered by SuggestFastPath before they get here; this route
        # documents the endpoint and answers when the middleware stack is bypassed. The body is
        # SuggestResponse by construction, so FastAPI's second validation of it is skipped.
        status, body = await answer_suggest(req)
        return Response(body, status_code=status, media_type="application/json")

    @app.post("/v1/generate", response_model=GenerateResponse)
    def generate(req: GenerateRequest) -> dict:
        p = prepare(req.prefix)
        ids = generate_ids(model, p.ids, req.length, req.temperature, req.top_k, req.top_p, 1, rng(req.seed))[0]
        text = vocab.decode(ids.tolist())
        return {"prefix": req.prefix, "text": (p.joiner + text) if text else "", "tokens": len(ids)}

    @app.post("/v1/generate/stream", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}},
                               "description": 'one JSON object per line: {"text": token} ..., then '
                                              '{"done": true, "tokens": n}'}})
    def generate_stream(req: GenerateRequest) -> StreamingResponse:
        p = prepare(req.prefix)
        ids = iter_generate_ids(model, p.ids, req.length, req.temperature, req.top_k, req.top_p, rng(req.seed))

        def lines() -> Iterator[bytes]:
            n = 0
            for i in ids:
                piece = vocab.idx_to_token[i]
                piece = (p.joiner if n == 0 else vocab.separator) + piece
                n += 1
                yield (json.dumps({"text": piece}, ensure_ascii=False) + "\n").encode()
            yield (json.dumps({"done": True, "tokens": n}) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
