"""Where ``POST /v1/suggest`` is answered: the engine in this process, or in a process of its own.

Both backends have one coroutine, ``suggest(text, k, client) -> bytes``: the suggestions as a JSON
object (``Suggestions.to_dict()``), raising the engine's ``UsageError`` for a bad request. The
JSON is encoded on the event loop's side (the engine is the busier of the two).

* ``ThreadBackend``: the ``SuggestEngine`` of this process (its batching worker is a thread).
  Simple, and what the tests and the library use; but the worker's Python and the event loop's
  share one GIL, so on a small machine the HTTP work and the search take turns on one core.
* ``AdaptiveBackend`` (``rnnlab serve --adapt``): an ``AdaptiveSuggester`` in one thread, each
  client answered from its own adapted copy of the model (no batching across clients).
* ``ProcessBackend``: the same engine and the same batching loop in a child process
  (``rnnlab serve`` uses it). The event loop queues each request for a writer thread and goes back
  to HTTP; the child steps every request in flight at once (``run_worker``, as the thread does)
  and sends the answers of each step back in one message, which a reader thread (blocked in
  ``recv``) hands to the event loop. The two processes run on two cores; a request costs a few
  dozen microseconds of pickling each way.

        event loop             this process's threads              engine process
        suggest() ─► outbox ─► writer: send (id, text, k, client) ─pipe─► admit -> step() -> ...
        future set ◄─ call_soon_threadsafe ◄─ reader: recv ◄─pipe─ [(id, ok, answer | error), ...]

The pipe is ``multiprocessing.connection`` with blocking ends only (its framing is whole
messages; a non-blocking end would tear a large answer). The child holds its own copy of the
weights (sent at start) and the per-client state cache; it stops when the pipe closes (the server
exits) or on ``close()``. A child that dies is replaced (see ``ProcessBackend``).
"""
from __future__ import annotations

import asyncio
import atexit
import json
import math
import sys
import threading
import time
import weakref

from ..checkpoint import Checkpoint
from ..errors import RnnlabError
from ..suggest import AdaptiveSuggester, SuggestEngine
from .engine_process import EngineProcess, checkpoint_bytes, process_state


def suggestions_json(d: dict) -> bytes:
    """Compact UTF-8 JSON of one answer (``Suggestions.to_dict()``), as FastAPI's own responses
    (a non-finite float is null)."""
    try:
        return json.dumps(d, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:  # an infinite log-probability, say: JSON has no such number
        for item in [*d["next_chars"], *d["completions"]]:
            for key, value in item.items():
                if isinstance(value, float) and not math.isfinite(value):
                    item[key] = None
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()


class ThreadBackend:
    """The engine of this process; its worker thread batches the requests."""

    def __init__(self, engine: SuggestEngine):
        self.engine = engine

    async def suggest(self, text: str, k: int, client: str) -> bytes:
        return suggestions_json((await asyncio.wrap_future(self.engine.submit(text, k, client=client))).to_dict())

    def status(self) -> dict:
        return {"kind": "thread", "state": "ready"}

    def close(self) -> None:
        self.engine.close()


class AdaptiveBackend:
    """``rnnlab serve --adapt``: an ``AdaptiveSuggester`` (each client's own adapted copy of the
    model) in one worker thread of this process; requests are answered one at a time, in order,
    and at most ``queue`` wait (more get 503 with Retry-After: ``pool.Busy``)."""

    def __init__(self, suggester: AdaptiveSuggester, queue: int = 64):
        from .pool import WorkPool

        self.suggester = suggester
        self.pool = WorkPool(1, queue, "rnnlab-adapt", "adapting requests")

    async def suggest(self, text: str, k: int, client: str) -> bytes:
        answer = await self.pool.run(self.suggester.suggest, text, k, client)
        return suggestions_json(answer.to_dict())

    async def reset(self, client: str) -> bool:
        return await self.pool.run(self.suggester.reset, client)

    def status(self) -> dict:
        return {"kind": "adapt", "state": "ready", "adapt": self.suggester.status(), "queue": self.pool.status()}

    def close(self) -> None:
        self.pool.close()
        self.suggester.close()


HANG_SECONDS = 60.0  # a child holding requests and answering nothing this long is hung (the longest request
# allowed, 10,000 characters at k = 20, takes a second or two)


class WorkerUnavailable(RnnlabError):
    """The suggestion process cannot answer now (it stopped and is being restarted, or could not be
    started): the server answers 503 with this message."""


class ProcessBackend:
    """The engine in a child process (see the module docstring), restarted when it dies.

    ``engine_kwargs`` are those of ``SuggestEngine`` plus ``cache_clients``/``cache_per_client``;
    ``threads`` is the child's torch thread count. If the child dies (killed, crashed, out of
    memory), the requests it held fail with ``WorkerUnavailable`` (503), a new child is started in
    the background, and requests that arrive meanwhile wait for it; after ``max_start_failures``
    failed starts in a row the backend reports itself failed and answers 503 at once.
    A child that is alive but answers nothing for ``hang_seconds`` while requests wait (stuck in a
    loop, stopped by a signal or a debugger) is *hung*: a watchdog kills it, which fails what it
    held with 503 and starts a new one as above. ``status()`` is what ``/healthz`` shows.
    """

    def __init__(self, checkpoint: Checkpoint, threads: int = 1, start_timeout: float = 120.0,
                 max_start_failures: int = 3, hang_seconds: float = HANG_SECONDS, **engine_kwargs):
        self.notes: list[str] = []
        self.words: dict | None = None
        self._args = (checkpoint_bytes(checkpoint), threads, engine_kwargs)
        self.start_timeout, self.max_start_failures = start_timeout, max_start_failures
        self._lock = threading.Lock()
        # request id -> (its loop, its future, the child's generation it went to (-1: not sent yet), when it went)
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future, int, float]] = {}
        self._backlog: list[tuple] = []  # requests that arrived while no worker was ready
        self._next_id = 0
        self._closed = False
        self.restarts = 0
        self.state = "starting"
        self.last_error = ""
        self.hang_seconds = hang_seconds
        self._last_answer = time.monotonic()
        self._worker = EngineProcess(*self._args, generation=0)
        try:
            ready = self._worker.wait_ready(start_timeout)
            self.notes, self.words = ready["notes"], ready["words"]  # the word search, as the child loaded it
        except RnnlabError:
            self._worker.stop()
            raise
        self._worker.start_threads(self._on_answers, self._on_exit)
        self.state = "ready"
        _LIVE_BACKENDS.add(self)
        threading.Thread(target=self._watch, name="rnnlab-suggest-watchdog", daemon=True).start()

    # -- the event loop's side -----------------------------------------------------------------
    async def suggest(self, text: str, k: int, client: str) -> bytes:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if self._closed or self.state == "failed":
                raise WorkerUnavailable(f"the suggestion process is not running ({self.last_error or 'closed'}); "
                                        f"restart the server")
            rid = self._next_id = self._next_id + 1
            msg = (rid, text, k, client)
            if self.state == "ready":
                self._pending[rid] = (loop, future, self._worker.generation, time.monotonic())
                self._worker.outbox.put(msg)
            else:  # restarting: sent as soon as the new process is ready
                self._pending[rid] = (loop, future, -1, 0.0)
                self._backlog.append(msg)
        return suggestions_json(await future)

    def status(self) -> dict:
        """What ``/healthz`` shows. ``state`` is ``ready`` only while the process can answer: a
        process that is stopped (SIGSTOP, a debugger) or already dead reads ``stopped``, whatever
        the pipe says."""
        with self._lock:
            pid, state = self._worker.proc.pid, self.state
            if state == "ready" and process_state(pid) in ("T", "t", "Z", "X"):
                state = "stopped"
            elif state == "ready" and self._stalled() > min(5.0, self.hang_seconds / 2):
                state = "unresponsive"  # alive, requests waiting, nothing answered for a while
            return {"kind": "process", "state": state, "pid": pid, "restarts": self.restarts,
                    "in_flight": len(self._pending), **({"error": self.last_error} if self.last_error else {})}

    # -- the watchdog ---------------------------------------------------------------------------
    def _stalled(self) -> float:
        """Seconds the current child has held a request without answering anything (0: none waits).
        Called with the lock held."""
        generation = self._worker.generation
        sent = [at for _, _, gen, at in self._pending.values() if gen == generation]
        return time.monotonic() - max(min(sent), self._last_answer) if sent else 0.0

    def _watch(self) -> None:
        """Kill a hung child (see the class docstring); the reader then sees its pipe close."""
        while True:
            time.sleep(min(1.0, self.hang_seconds / 4))
            with self._lock:
                if self._closed:
                    return
                worker = self._worker
                hung = self.state == "ready" and self._stalled() > self.hang_seconds
                if hung:
                    worker.hung = True
            if hung:
                print(f"rnnlab: the suggestion process answered nothing for {self.hang_seconds:g} s with requests "
                      f"waiting; killing it", file=sys.stderr, flush=True)
                worker.proc.kill()

    # -- the reader thread's side --------------------------------------------------------------
    def _on_answers(self, worker: EngineProcess, answers: list) -> None:
        for rid, ok, payload in answers:
            with self._lock:
                entry = self._pending.pop(rid, None)
                self._last_answer = time.monotonic()
            if entry is not None:
                loop, future, _, _ = entry
                _resolve(loop, future, payload if ok else None, None if ok else payload)

    def _on_exit(self, worker: EngineProcess) -> None:
        """The pipe to ``worker`` closed: fail what it held; start a new worker unless closing."""
        with self._lock:
            if worker is not self._worker or self._closed:
                return
            code = worker.proc.exitcode
            if code is None:
                worker.proc.join(1.0)
                code = worker.proc.exitcode
            self.last_error = (f"the suggestion process hung (nothing answered for {self.hang_seconds:g} s) and was "
                               f"killed" if worker.hung else f"the suggestion process stopped (exit code {code})")
            lost = [rid for rid, (_, _, gen, _) in self._pending.items() if gen == worker.generation]
            entries = [self._pending.pop(rid) for rid in lost]
            self.state = "restarting"
        message = f"{self.last_error} while answering; it is being restarted, try again in a moment"
        for loop, future, _, _ in entries:
            _resolve(loop, future, None, WorkerUnavailable(message))
        print(f"rnnlab: {self.last_error}; restarting it", file=sys.stderr, flush=True)
        threading.Thread(target=self._restart, args=(worker,), name="rnnlab-suggest-restart", daemon=True).start()

    def _restart(self, dead: EngineProcess) -> None:
        dead.stop(timeout=1.0)
        failures = 0
        while True:
            with self._lock:
                if self._closed:
                    return
                generation = dead.generation + 1 + failures
            worker = EngineProcess(*self._args, generation=generation)
            try:
                worker.wait_ready(self.start_timeout)
            except RnnlabError as exc:
                worker.stop(timeout=1.0)
                failures += 1
                if failures < self.max_start_failures:
                    continue
                with self._lock:
                    self.state, self.last_error = "failed", str(exc)
                    backlog, self._backlog = self._backlog, []
                    entries = [self._pending.pop(m[0], None) for m in backlog]
                for entry in entries:
                    if entry is not None:
                        _resolve(entry[0], entry[1], None, WorkerUnavailable(f"{exc}; restart the server"))
                print(f"rnnlab: {exc}; suggestions are unavailable until the server is restarted", file=sys.stderr)
                return
            with self._lock:
                if self._closed:
                    worker.stop(timeout=1.0)
                    return
                self._worker = worker
                worker.start_threads(self._on_answers, self._on_exit)
                self.restarts += 1
                self.state, self.last_error = "ready", ""
                self._last_answer = time.monotonic()
                for msg in self._backlog:
                    loop, future, _, _ = self._pending[msg[0]]
                    self._pending[msg[0]] = (loop, future, worker.generation, time.monotonic())
                    worker.outbox.put(msg)
                self._backlog = []
            print("rnnlab: the suggestion process is running again", file=sys.stderr, flush=True)
            return

    def close(self) -> None:
        """Stop the child and the threads (idempotent); waiting requests fail with 503."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.state = "closed"
            entries, self._pending, self._backlog = list(self._pending.values()), {}, []
        for loop, future, _, _ in entries:
            _resolve(loop, future, None, WorkerUnavailable("the server is shutting down"))
        self._worker.stop()
        _LIVE_BACKENDS.discard(self)


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result, exc) -> None:
    """Settle ``future`` on its own event loop, from any thread (a closed loop is skipped)."""
    def settle() -> None:
        if not future.done():
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody waits for this answer any more
        pass


_LIVE_BACKENDS: "weakref.WeakSet[ProcessBackend]" = weakref.WeakSet()
# stop the children and the pipe threads when the interpreter starts to exit, before it joins threads
getattr(threading, "_register_atexit", atexit.register)(lambda: [b.close() for b in list(_LIVE_BACKENDS)])
