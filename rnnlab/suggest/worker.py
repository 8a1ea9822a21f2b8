"""The batching loop that answers suggestion requests, shared by both back ends: a worker thread
of this process (``ThreadWorker``, used by ``SuggestEngine.submit``) and the server's suggestion
process (``rnnlab.serve.backend``), which feeds it from a pipe instead of a queue.

        requests ──> receive() ──> admit up to max_batch in flight ──> Scheduler.step(): one model call
                                                                     ──> deliver(the answers that ended)
    (a request that arrives during a step is admitted before the next one)
"""
from __future__ import annotations

import atexit
import threading
import weakref
from concurrent.futures import Future
from typing import Any, Callable

from ..errors import RnnlabError
from .search import Scheduler
from .types import SuggestRequest

Receive = Callable[[bool], "list[tuple[Any, SuggestRequest]] | None"]
Deliver = Callable[["list[tuple[Any, Any]]"], None]


def run_worker(engine, receive: Receive, deliver: Deliver, max_batch: int) -> None:
    """Answer requests until ``receive`` returns None.

    ``receive(block)`` returns the (tag, request) pairs that have arrived, waiting for one only when
    ``block`` (nothing is in flight); ``deliver(answers)`` gets (tag, ``Suggestions`` or the
    exception) for the requests each step finished. Requests still open when the loop ends are
    delivered as errors."""
    scheduler = Scheduler(engine)
    queued: list[tuple[Any, SuggestRequest]] = []
    waiting: list[tuple[Any, Future]] = []
    try:
        while True:
            new = receive(not queued and not scheduler.in_flight)
            if new is None:
                return
            queued += new
            room = max(0, max_batch - scheduler.in_flight)
            for tag, request in queued[:room]:
                future: Future = Future()
                scheduler.admit(request, future)
                waiting.append((tag, future))
            del queued[:room]
            if scheduler.in_flight:
                scheduler.step()
            if any(f.done() for _, f in waiting):
                answers = [(tag, f.exception() or f.result()) for tag, f in waiting if f.done()]
                waiting = [(tag, f) for tag, f in waiting if not f.done()]
                deliver(answers)
    finally:
        stopped = RnnlabError("the suggestion worker stopped")
        scheduler.fail(stopped)
        left = [(tag, f.exception() or f.result()) for tag, f in waiting] + [(tag, stopped) for tag, _ in queued]
        if left:
            deliver(left)


class ThreadWorker:
    """Queues the requests of many threads for one worker thread running ``run_worker``.

        request threads
        submit(r1) ─┐
        submit(r2) ─┼─> queue ──> worker thread (started on demand): run_worker
        submit(r3) ─┘

    The thread exits after ``idle_s`` without work, so an idle engine holds no thread; ``close``
    stops it at once. Every live worker is closed when the interpreter starts to exit (before it
    joins threads), so no worker is inside a torch call while the interpreter shuts down (which
    aborts the process: "terminate called without an active exception").
    """

    def __init__(self, engine, max_batch: int, idle_s: float = 1.0):
        # a weak reference: the engine owns its worker, and a cycle between them would keep a dropped
        # engine's model and cache alive until the next garbage collection (an adapting server drops
        # one per evicted client)
        self._engine = weakref.ref(engine)
        self.max_batch, self.idle_s = max_batch, idle_s
        self._queue: list[tuple[Future, SuggestRequest]] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        _LIVE.add(self)

    def submit(self, request: SuggestRequest) -> Future:
        future: Future = Future()
        with self._cv:
            engine = self._engine()
            if self._closed or engine is None:
                raise RnnlabError("the suggestion engine is closed")
            self._queue.append((future, request))
            if self._thread is not None:
                self._cv.notify()
            else:
                self._thread = threading.Thread(target=run_worker, name="rnnlab-suggest",
                                                args=(engine, self._receive, _settle, self.max_batch))
                self._thread.start()
        return future

    def _receive(self, block: bool):
        with self._cv:
            if block and not self._queue and not self._closed:
                self._cv.wait(self.idle_s)
            if self._closed or (block and not self._queue):
                self._thread = None  # idle (or closed): this thread ends; the next submit starts another
                return None
            taken, self._queue = self._queue, []
            return taken

    def close(self) -> None:
        """Stop the worker (after the step it is in) and wait for it; queued requests fail."""
        with self._cv:
            self._closed = True
            queued, self._queue = self._queue, []
            thread = self._thread
            self._cv.notify_all()
        _settle([(future, RnnlabError("the suggestion engine is closed")) for future, _ in queued])
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _settle(answers: list[tuple[Future, Any]]) -> None:
    for future, result in answers:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


_LIVE: "weakref.WeakSet[ThreadWorker]" = weakref.WeakSet()


def _close_all() -> None:
    for worker in list(_LIVE):
        worker.close()


# run when the interpreter starts to exit, before it joins threads (as concurrent.futures does)
getattr(threading, "_register_atexit", atexit.register)(_close_all)
