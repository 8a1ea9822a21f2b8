"""Where the server's long work runs: a few threads of its own with a bounded queue in front.

Generation (and the adapting keyboard's one-at-a-time answers) never run in the framework's thread
pool, which the page, the static files and every ``def`` route share: 48 long generations there
once kept ``/healthz`` waiting 44 s. A ``WorkPool`` has ``workers`` threads and admits at most
``workers + queue`` jobs (running or waiting); one more is refused at once (``Busy``: 503 with
``Retry-After``) instead of joining an unbounded line.

    request ─► admit? ──no──► 503 + Retry-After
                 │ yes
                 ▼
              executor (workers threads) ─► job done ─► the admission is released

A job's admission is released when its thread finishes it (not when its client leaves), so the
bound holds even for clients that disconnect while their job runs. A stream (``stream``) runs in
one thread from its first token to its last, handing each piece to the event loop; a client that
disconnects stops it at the next piece.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import AsyncIterator, Callable, Iterable

from ..errors import RnnlabError

RETRY_AFTER_S = 1


class Busy(RnnlabError):
    """Every worker is busy and the queue is full: the server answers 503 with ``Retry-After``."""


class WorkPool:
    def __init__(self, workers: int, queue: int, name: str, what: str = "jobs"):
        self.workers, self.queue, self.what = workers, queue, what
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self.active = 0  # admitted jobs: running or waiting for a thread
        self.refused = 0

    def submit(self, fn: Callable, *args) -> Future:
        """Run ``fn(*args)`` on a worker thread, or raise ``Busy`` if ``workers + queue`` are admitted."""
        with self._lock:
            if self.active >= self.workers + self.queue:
                self.refused += 1
                raise Busy(f"the server is busy: {self.active} {self.what} running or waiting (at most "
                           f"{self.workers} at once plus {self.queue} waiting); retry in a moment")
            self.active += 1
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down
            self._release(None)
            raise Busy("the server is shutting down") from None
        future.add_done_callback(self._release)
        return future

    def _release(self, _future) -> None:
        with self._lock:
            self.active -= 1

    async def run(self, fn: Callable, *args):
        """``fn(*args)`` on a worker thread, awaited."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stream(self, make: Callable[[], Iterable[bytes]]) -> AsyncIterator[bytes]:
        """The pieces of ``make()``, computed on one worker thread, for an async response. Admission
        happens here, before the first piece (``Busy`` now, not midway); ``aclose()`` of the
        returned iterator (the client left) stops the thread at its next piece."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        end = object()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody reads any more
                stop.set()

        def work() -> None:
            try:
                for piece in make():
                    if stop.is_set():
                        return
                    put(piece)
            finally:
                put(end)

        self.submit(work)

        async def pieces_of() -> AsyncIterator[bytes]:
            try:
                while (piece := await pieces.get()) is not end:
                    yield piece
            finally:
                stop.set()

        return pieces_of()

    def status(self) -> dict:
        with self._lock:
            return {"workers": self.workers, "queue": self.queue, "active": self.active, "refused": self.refused}

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
