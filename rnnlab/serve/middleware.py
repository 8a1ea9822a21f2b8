"""The server's ASGI middleware: request limits, the Host check and the suggest fast path.

Each answers what it refuses itself, with a one-line ``{"error": ...}`` JSON body, before the
framework sees the request.
"""
from __future__ import annotations

import asyncio
import contextlib
import json

MAX_HEADER_BYTES = 16 * 1024


class HostCheck:
    """ASGI middleware: answer 400 to a request without exactly one ``Host`` header, or whose
    ``Host`` is not one of ``allowed``, so a web page cannot reach this server through DNS
    rebinding. An allowed entry without a port (``example.org``) accepts that name on any port;
    one with a port (``example.org:8080``, ``[::1]:8000``) only that port."""

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            hosts = [v for k, v in scope.get("headers") or [] if k == b"host"]
            if len(hosts) != 1:
                return await send_error(send, 400, f"a request needs exactly one Host header, this one has "
                                                    f"{len(hosts)}")
            host = hosts[0].decode("latin-1").lower()
            name = host[:host.index("]") + 1] if host.startswith("[") and "]" in host else host.split(":")[0]
            if name not in self.allowed and host not in self.allowed:
                return await send_error(send, 400, f"Host {host!r} is not this server's; use its own address "
                                                    f"(rnnlab serve --allowed-host adds names)")
        return await self.app(scope, receive, send)


class HeaderLimit:
    """ASGI middleware: refuse requests whose headers are over ``max_bytes`` in all with 431."""

    def __init__(self, app, max_bytes: int = MAX_HEADER_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = sum(len(k) + len(v) for k, v in scope.get("headers") or [])
            if size > self.max_bytes:
                return await send_error(send, 431, f"request headers of {size} bytes are over the limit of "
                                                    f"{self.max_bytes}")
        return await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: read the request body up to ``max_bytes`` and refuse a larger one with 413
    (by its Content-Length before reading anything, or as soon as a chunked body passes the limit);
    a body that has not arrived whole within ``timeout`` seconds gets 408."""

    def __init__(self, app, max_bytes: int, timeout: float = 10.0):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await send_error(send, 400, "Content-Length is not a number")
            if n > self.max_bytes:
                return await send_error(send, 413, f"request body of {n} bytes is over the limit of {self.max_bytes}")
        body = bytearray()
        try:
            async with _deadline(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if len(body) > self.max_bytes:
                        return await send_error(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return await send_error(send, 408, f"the request body did not arrive within {self.timeout:g} s")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as a streaming response does

        await self.app(scope, replay, send)


@contextlib.asynccontextmanager
async def _deadline(seconds: float):
    """Cancel what runs inside after ``seconds`` (``TimeoutError``): ``asyncio.timeout`` where there
    is one (Python 3.11+, no task per wait), else a timer that cancels the current task."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            yield
        return
    task, fired = asyncio.current_task(), []
    timer = asyncio.get_running_loop().call_later(seconds, lambda: (fired.append(1), task.cancel()))
    try:
        yield
    except asyncio.CancelledError:
        if fired:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()


class SuggestFastPath:
    """ASGI middleware: answer a well-formed ``POST /v1/suggest`` directly, without the framework.

    A keystroke is the server's hottest request, and FastAPI's path through its middleware stack,
    routing and dependency solving costs more CPU than the HTTP parsing itself. A request with a
    JSON body that ``body_model`` (the route's ``SuggestBody``) accepts (the same ``json.loads`` + model validation the route
    does) is answered here with the route's exact response; anything else (malformed JSON, an
    invalid field, another content type) goes on to the route, so every error is the framework's
    own. The route stays the documented one (OpenAPI). Sits inside ``BodyLimit``.
    """

    def __init__(self, app, body_model, answer, retry_after: int = 1):
        self.app, self.body_model, self.answer = app, body_model, answer  # answer(body) -> (status, JSON bytes)
        self.retry_after = str(retry_after).encode()  # sent with a 503 (busy or restarting: try again)

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
                req = self.body_model.model_validate(json.loads(body))
            except (ValueError, RecursionError):  # bad JSON, an invalid field, nesting too deep: the route explains
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
        headers = [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status,
                    "headers": headers + [(b"retry-after", self.retry_after)] if status == 503 else headers})
        await send({"type": "http.response.body", "body": payload})


def error_json(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":")).encode()


async def send_error(send, status: int, message: str) -> None:
    body = error_json(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
