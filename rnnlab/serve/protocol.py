"""The HTTP connection: uvicorn's httptools protocol with what it reads bounded *before* parsing.

uvicorn's own limits come too late for a hostile client: a request line or header is accumulated
whole (by concatenation, quadratic in its length) before any ASGI middleware can count it, and a
connection that sends its head one byte at a time, or nothing at all, is held forever. Here:

* **size**: at most ``max_head`` bytes of request line and headers are fed to the parser; one more
  and the connection answers 431 and closes (``HeaderLimit`` then applies the documented 16 KiB to
  the headers that got through, with its own message);
* **time**: a request's line and headers must arrive within ``timeout`` seconds of its first byte
  (or of the connection's opening); else 408 and the connection closes. Between requests uvicorn's
  keep-alive timeout applies; a slow *body* is ``BodyLimit``'s (the same timeout).

    bytes ─► data_received: head so far + these > max_head? ─yes─► 431, close
                 │ no
                 ▼
             httptools parser ─► on_message_begin (arm the head timer) ─► on_headers_complete
             (disarm; the body is the app's)  ─► ... on_message_complete (the next head starts)
"""
from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .middleware import MAX_HEADER_BYTES

MAX_HEAD_BYTES = 2 * MAX_HEADER_BYTES  # request line + headers, as sent (names, values, separators)
READ_TIMEOUT = 10.0  # seconds for a request's head (and, in BodyLimit, for its body)


def bounded_protocol(max_head: int = MAX_HEAD_BYTES, timeout: float = READ_TIMEOUT) -> type:
    """A uvicorn ``http`` protocol class with these bounds (uvicorn builds one per connection)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"max_head": max_head, "timeout": timeout})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head = MAX_HEAD_BYTES
    timeout = READ_TIMEOUT

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # bytes of the current head fed to the parser
        self._in_head = True  # reading a request's line and headers (or waiting for the first byte)
        self._head_timer = self.loop.call_later(self.timeout, self._head_too_slow)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head or self.transport.is_closing():
            return super().data_received(data)
        room = self.max_head - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            return super().data_received(data)
        self._head_bytes += room
        super().data_received(data[:room])  # what fits: the head may end inside it
        if self.transport.is_closing():
            return
        if self._in_head:  # still no end of the headers: refuse before reading any more
            return self._refuse(431, f"request line and headers are over the limit of {self.max_head} bytes")
        self.data_received(data[room:])  # the body, or the next request's head (counted afresh)

    # the parser's callbacks: where a head starts and ends
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.timeout, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # the next request's head (the keep-alive timer waits for it)

    def _disarm(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes:
                self._refuse(408, f"the request's line and headers did not arrive within {self.timeout:g} s")
            else:  # nothing sent at all: nobody to answer
                self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        self._disarm()
        body = json.dumps({"error": message}).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        self.transport.close()
