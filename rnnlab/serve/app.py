"""The HTTP API and the predictive-keyboard page, as a FastAPI app.

    GET  /                     the page (static files served by the app itself: no CDN)
    GET  /healthz              liveness, the model, the limits and the suggestion worker's state
    GET  /openapi.json         the OpenAPI schema
    POST /v1/suggest           {text, k, client}                  -> next characters + word completions
    POST /v1/generate          {prefix, length, temperature, top_k, top_p, seed} -> continuation
    POST /v1/generate/stream   same body -> NDJSON lines {"text": token} ..., then {"done": true, ...}
    POST /v1/adapt/reset       {client} -> forget the client's adaptation (rnnlab serve --adapt)

Every request is validated before it reaches the model, against the bounds declared once in
``rnnlab.config`` (the request models are generated from those fields): a body over
``max_body_bytes`` is refused with 413 before it is read, request headers over 16 KiB with 431, a
``Host`` that is not this server's with 400 (DNS rebinding), malformed JSON with 400, out-of-range
values with 422, each with a one-line ``error`` message. Suggest requests go to the engine's
batching worker (a process of its own, or with ``ServeConfig(suggest_worker="thread")`` a thread,
``rnnlab.serve.backend``); the generate endpoints run the one decoder (``rnnlab.decoding``) on
the generation pool's own threads (``rnnlab.serve.pool``: a bounded queue, 503 with
``Retry-After`` when it is full), so ``<unk>`` is never emitted, a failing stream ends with an
``error`` line, and ``/healthz`` and the page (answered on the event loop) never wait behind them.
"""
from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..adaptation import training_ids
from ..checkpoint import Checkpoint, load_checkpoint
from ..config import MAX_TEXT_CHARS, AdaptConfig, GenerateConfig, ServeConfig, SuggestConfig
from ..decoding import decode, generate_ids
from ..errors import RnnlabError
from ..suggest import AdaptiveSuggester, StateCache, checkpoint_words, load_engine, words_summary
from ..version import __version__
from .backend import AdaptiveBackend, ProcessBackend, ThreadBackend, WorkerUnavailable
from .middleware import BodyLimit, HeaderLimit, HostCheck, SuggestFastPath, error_json
from .pool import RETRY_AFTER_S, Busy, WorkPool

STATIC = Path(__file__).resolve().parent / "static"
MAX_CLIENT_ID = 64


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate); send UTF-8 text") from None
    return value


def _field(cls: type, name: str) -> tuple[Any, Any]:
    """A pydantic field with the bounds and help of the config field ``cls.name`` (declared once)."""
    import dataclasses
    import typing

    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta, tp = f.metadata, typing.get_type_hints(cls)[name]
    kw = {k: meta[m] for k, m in (("ge", "min"), ("le", "max"), ("gt", "above")) if meta.get(m) is not None}
    if tp is float:
        kw["allow_inf_nan"] = False
    return tp, Field(f.default, description=meta.get("help", ""), **kw)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuggestBody(_Body):
    text: str = Field(max_length=MAX_TEXT_CHARS, description="the text typed so far")
    k: int = _field(SuggestConfig, "k")[1]
    client: str = Field("", max_length=MAX_CLIENT_ID,
                        description="an id per typist (e.g. per browser tab): whose state cache to use")

    _check_text = field_validator("text", "client")(_utf8)


class ResetBody(_Body):
    client: str = Field(min_length=1, max_length=MAX_CLIENT_ID, description="the client whose adaptation to forget")

    _check_client = field_validator("client")(_utf8)


GenerateBody = create_model(
    "GenerateBody", __base__=_Body,
    prefix=(str, Field(max_length=MAX_TEXT_CHARS, description="text to continue (empty: a new text, read from the "
                                                                 "start token, as `rnnlab generate --prefix ''`)")),
    **{name: _field(GenerateConfig, name) for name in ("length", "temperature", "top_k", "top_p", "seed")},
    __validators__={"_check_prefix": field_validator("prefix")(_utf8)},
)


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


class _Stream(StreamingResponse):
    """A streaming response whose body iterator is closed however the response ends (a client that
    leaves stops its generation thread at the next token)."""

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


def _validation_message(errors: list[dict]) -> tuple[int, str, list[dict]]:
    detail = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in errors]
    if any(d["type"] == "json_invalid" for d in detail):
        return 400, "malformed JSON body: " + "; ".join(d["msg"] for d in detail), detail
    parts = [f"{'.'.join(d['loc'][1:]) or 'body'}: {d['msg']}" for d in detail]
    return 422, "invalid request: " + "; ".join(parts), detail


def create_app(checkpoint: str | Path | Checkpoint, serve: ServeConfig | None = None,
               suggest: SuggestConfig | None = None, adapt: AdaptConfig | None = None, *,
               allowed_hosts: list[str] | None = None, log=lambda msg: None) -> FastAPI:
    """The app for one checkpoint (a directory, loaded on the CPU, or an already loaded ``Checkpoint``).

    ``serve`` (``config.ServeConfig``, the same settings as ``rnnlab serve``'s flags): the bounds,
    the generation pool and where suggestions run: ``suggest_worker="process"`` answers
    ``/v1/suggest`` from an engine in a child process (with this process's torch threads), so that
    the search does not take turns with the event loop on one GIL (``rnnlab.serve.backend``).
    ``suggest``: the keyboard's search. ``adapt`` turns on online adaptation per client
    (``rnnlab.suggest.adapt``; in this process, answered one at a time) and ``POST /v1/adapt/reset``.
    ``allowed_hosts`` (e.g. ``["127.0.0.1", "localhost"]``, ``serve.cli.allowed_hosts``) refuses
    other ``Host`` headers; None accepts any.
    """
    serve = serve if serve is not None else ServeConfig()
    serve.validate()
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, "cpu")
    model, tokenizer = ckpt.model, ckpt.tokenizer
    model.eval()
    scfg = suggest if suggest is not None else SuggestConfig()
    scfg.validate()
    cache = (serve.cache_clients, serve.cache_per_client)
    # the word search (the checkpoint's word model, every client's recent words) unless --words off
    if adapt is not None:
        adapt.validate()
        words = checkpoint_words(ckpt, scfg, log)
        train_ids = training_ids(ckpt, log) if adapt.method == "rms" else None
        backend = AdaptiveBackend(AdaptiveSuggester(model, tokenizer, scfg, adapt, train_ids,
                                                    StateCache(*cache), words=words))
        summary = words_summary(words)
    elif serve.suggest_worker == "process":
        backend = ProcessBackend(ckpt, threads=torch.get_num_threads(), config=scfg, cache_clients=cache[0],
                                 cache_per_client=cache[1], max_batch=serve.max_batch,
                                 hang_seconds=serve.suggest_hang_seconds)
        for note in backend.notes:
            log(note)
        summary = backend.words
    else:
        engine = load_engine(ckpt, scfg, StateCache(*cache), serve.max_batch, log=log)
        backend = ThreadBackend(engine)
        summary = words_summary(engine.words)
    generation = WorkPool(serve.generate_workers, serve.generate_queue, "rnnlab-generate", "generations")
    source = ckpt.info.get("source")
    info = {
        "status": "ok", "rnnlab_version": __version__,
        "model": {"model": ckpt.model_config.model, "impl": ckpt.model_config.impl,
                  "hidden_size": ckpt.model_config.hidden_size, "num_layers": ckpt.model_config.num_layers,
                  "vocab_size": len(tokenizer.vocab)},
        "data": {"source": Path(str(source)).name if source else None, "preset": tokenizer.preset,
                 "token": tokenizer.token},
        "words": summary,  # the word search's word model and settings (None: the character beam alone)
        "limits": {"max_text_chars": MAX_TEXT_CHARS, "max_k": SuggestConfig.__dataclass_fields__["k"].metadata["max"],
                   "max_length": GenerateConfig.__dataclass_fields__["length"].metadata["max"],
                   "max_body_bytes": serve.max_body_bytes},
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        generation.close()
        backend.close()

    app = FastAPI(title="rnnlab", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Suggestions and generation from an rnnlab language model.")
    app.state.suggest_backend = backend
    app.state.checkpoint = ckpt

    async def answer_suggest(req: SuggestBody) -> tuple[int, bytes]:
        """The response to a valid suggest request: (status, JSON body)."""
        # queued to the engine's batching worker; the event loop awaits it without a thread per request
        start = time.perf_counter()
        try:
            body = await backend.suggest(req.text, req.k, req.client)  # a JSON object: b'{...}'
        except (WorkerUnavailable, Busy) as exc:  # restarting, or too busy: not the client's fault (Retry-After)
            return 503, error_json(str(exc))
        except RnnlabError as exc:
            return 400, error_json(str(exc))
        elapsed = json.dumps((time.perf_counter() - start) * 1e3)
        return 200, body[:-1] + b',"elapsed_ms":' + elapsed.encode() + b"}"

    if serve.fast_path:
        app.add_middleware(SuggestFastPath, body_model=SuggestBody, answer=answer_suggest, retry_after=RETRY_AFTER_S)
    app.add_middleware(BodyLimit, max_bytes=serve.max_body_bytes, timeout=serve.read_timeout)  # every body is bounded first
    if allowed_hosts:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(HeaderLimit)  # the outermost: oversized headers never get further

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, message, detail = _validation_message(list(exc.errors()))
        return JSONResponse({"error": message, "detail": detail}, status_code=status)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"retry-after": str(RETRY_AFTER_S)})

    @app.exception_handler(RnnlabError)
    async def _rnnlab_error(request: Request, exc: RnnlabError):
        if isinstance(exc, WorkerUnavailable):
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"retry-after": str(RETRY_AFTER_S)})
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # 404, 405, an unparsable body...
        message = {404: f"no such endpoint: {request.method} {request.url.path}; see GET /openapi.json",
                   405: f"{request.method} is not allowed on {request.url.path}"
                        + (f" (allowed: {(exc.headers or {}).get('allow')})" if (exc.headers or {}).get("allow") else "")
                   }.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError):
        return JSONResponse({"error": "malformed JSON body: nested too deeply"}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # a bug of ours: still JSON, never a traceback
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has details"},
                            status_code=500)

    def generate_config(req) -> GenerateConfig:
        cfg = GenerateConfig(length=req.length, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                             seed=req.seed)
        cfg.validate()
        return cfg

    def rng(seed: int | None) -> torch.Generator | None:
        return None if seed is None else torch.Generator(device=model.device).manual_seed(seed)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.head("/healthz", include_in_schema=False)  # HEAD answers like GET, documented once
    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 and ``status: ok`` while suggestions can be answered; 503 and ``degraded`` while the
        suggestion process restarts (or could not be restarted). Answered on the event loop: it
        never waits behind a generation."""
        worker = backend.status()
        ok = worker["state"] == "ready"
        return JSONResponse({**info, "status": "ok" if ok else "degraded", "suggest_worker": worker,
                             "generation": generation.status()}, status_code=200 if ok else 503)

    @app.post("/v1/suggest", response_model=SuggestResponse)
    async def suggest(req: SuggestBody) -> Response:
        # valid requests are normally answered by SuggestFastPath before they get here; this route
        # documents the endpoint and answers when the middleware stack is bypassed. The body is
        # SuggestResponse by construction, so FastAPI's second validation of it is skipped.
        status, body = await answer_suggest(req)
        return Response(body, status_code=status, media_type="application/json",
                        headers={"retry-after": str(RETRY_AFTER_S)} if status == 503 else None)

    @app.post("/v1/adapt/reset")
    async def adapt_reset(req: ResetBody) -> JSONResponse:
        """Forget what the client's own copy of the model has learnt (``rnnlab serve --adapt``)."""
        if not isinstance(backend, AdaptiveBackend):
            return JSONResponse({"error": "adaptation is off; start the server with rnnlab serve --adapt"},
                                status_code=409)
        return JSONResponse({"client": req.client, "reset": await backend.reset(req.client)})

    @app.post("/v1/generate", response_model=GenerateResponse,
              responses={503: {"description": "every generation worker is busy and the queue is full "
                                              "(Retry-After says when to try again)"}})
    async def generate(req: GenerateBody) -> dict:
        cfg = generate_config(req)

        def work() -> dict:
            prompt = tokenizer.encode_prompt(req.prefix)
            ids = generate_ids(model, prompt.ids, cfg, rng(req.seed), tokenizer.suppressed_ids())[0].tolist()
            full = tokenizer.continue_text(prompt, ids)
            return {"prefix": req.prefix, "text": full[len(req.prefix):], "tokens": len(ids)}

        return await generation.run(work)

    @app.post("/v1/generate/stream", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}},
                               "description": 'one JSON object per line: {"text": token} ..., then '
                                              '{"done": true, "tokens": n}; a failure ends the stream with '
                                              '{"error": message}'}})
    async def generate_stream(req: GenerateBody) -> StreamingResponse:
        cfg = generate_config(req)

        def lines() -> Iterator[bytes]:  # on a generation thread, first token to last
            n = 0
            try:
                prompt = tokenizer.encode_prompt(req.prefix)
                with torch.inference_mode():
                    steps = decode(model, prompt.ids, cfg, rng(req.seed), tokenizer.suppressed_ids())
                    for tok in steps:
                        piece = tokenizer.piece(prompt, int(tok[0]), first=n == 0)
                        n += 1
                        yield (json.dumps({"text": piece}, ensure_ascii=False) + "\n").encode()
            except Exception as exc:  # noqa: BLE001 - the client is told, in the stream it reads
                yield (json.dumps({"error": f"generation failed after {n} tokens ({type(exc).__name__}: {exc})"},
                                  ensure_ascii=False) + "\n").encode()
                return
            yield (json.dumps({"done": True, "tokens": n}) + "\n").encode()

        return _Stream(generation.stream(lines), media_type="application/x-ndjson")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
