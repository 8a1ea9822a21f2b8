"""Where ``POST /v1/suggest`` is answered: the engine in this process, or in a process of its own.

Both backends have one coroutine, ``suggest(text, k, client) -> bytes``: the suggestions as a JSON
object (``Suggestions.to_dict()``), raising the engine's ``UsageError`` for a bad request. The
JSON is encoded on the event loop's side (the engine is the busier of the two).

* ``ThreadBackend``: the ``SuggestEngine`` of this process (its batching worker is a thread).
  Simple, and what the tests and the library use; but the worker's Python and the event loop's
  share one GIL, so on a small machine the HTTP work and the search take turns on one core.
* ``ProcessBackend``: the same engine and the same batching loop in a child process
  (``rnnlab serve`` uses it). The event loop sends each request down a pipe and goes back to HTTP;
  the child steps every request in flight at once (``_Scheduler``, as the thread does) and sends
  the answers of each step back in one message, read by the event loop when the pipe is readable
  (no thread on this side). The two processes run on two cores; a request costs a few dozen
  microseconds of pickling each way.

        event loop (this process)                     engine process
        suggest(): send (id, text, k, client) ──pipe──> queue -> admit -> step() -> ...
        pipe readable: resolve the futures   <──pipe── [(id, ok, to_dict() | error), ...] per step

The child holds its own copy of the weights (sent at start) and the per-client state cache; it
stops when the pipe closes (the server exits) or on ``close()``.
"""
from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import pickle
import threading
from concurrent.futures import Future

from ..checkpoint import Checkpoint
from ..errors import RnnlabError
from ..suggest import SuggestEngine, SuggestRequest, StateCache, _Scheduler


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

    def close(self) -> None:
        pass


class ProcessBackend:
    """The engine in a child process (see the module docstring). ``engine_kwargs`` are those of
    ``SuggestEngine`` plus ``cache_clients``/``cache_per_client``; ``threads`` is the child's torch
    thread count."""

    def __init__(self, checkpoint: Checkpoint, threads: int = 1, start_timeout: float = 120.0, **engine_kwargs):
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs torch threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_engine_main, args=(child, checkpoint, threads, engine_kwargs),
                                 name="rnnlab-suggest", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(start_timeout):
            self.close()
            raise RnnlabError(f"the suggestion process did not start within {start_timeout:.0f} s")
        try:
            status, detail = self._conn.recv()
        except EOFError:
            status, detail = "error", "it exited"
        if status != "ready":
            self.close()
            raise RnnlabError(f"the suggestion process failed to start: {detail}")
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # the pipe's writer side (one event loop normally; tests may use others)
        self._dead: BaseException | None = None

    async def suggest(self, text: str, k: int, client: str) -> bytes:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._watch(loop)
        if self._dead is not None:
            raise RuntimeError("the suggestion process has stopped") from self._dead
        future = loop.create_future()
        with self._lock:
            rid = self._next_id = self._next_id + 1
            self._pending[rid] = future
            try:
                self._conn.send((rid, text, k, client))
            except OSError as exc:
                del self._pending[rid]
                self._fail(exc)
                raise RuntimeError("the suggestion process has stopped") from exc
        return suggestions_json(await future)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the answers on ``loop`` whenever the pipe is readable."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._conn.fileno())
        self._loop = loop
        loop.add_reader(self._conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                for rid, ok, payload in self._conn.recv():
                    future = self._pending.pop(rid, None)
                    if future is None or future.done():
                        continue
                    if ok:
                        future.set_result(payload)
                    else:
                        future.set_exception(payload)
        except (EOFError, OSError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._dead = exc
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._conn.fileno())
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(RuntimeError("the suggestion process has stopped"))

    def close(self) -> None:
        """Stop the child (it also stops by itself when this process exits and the pipe closes)."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self._conn.fileno())
            except (OSError, ValueError):
                pass
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


def _engine_main(conn, checkpoint: Checkpoint, threads: int, engine_kwargs: dict) -> None:
    """The child: the engine's batching loop, fed by the pipe instead of a queue of threads."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it closes the pipe
    try:
        torch.set_num_threads(threads)
        model = checkpoint.model
        model.eval()
        kw = dict(engine_kwargs)
        cache = StateCache(kw.pop("cache_clients", 256), kw.pop("cache_per_client", 16))
        engine = SuggestEngine(model, checkpoint.vocab, checkpoint.data_config.preset, cache=cache, **kw)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    scheduler = _Scheduler(engine)
    queue: list[tuple[int, SuggestRequest]] = []
    waiting: list[tuple[int, Future]] = []
    while True:
        # block for work only when nothing is in flight; otherwise take what has arrived and step
        if not queue and not scheduler.in_flight:
            conn.poll(None)
        try:
            while conn.poll():
                msg = conn.recv()
                if msg is None:
                    return
                rid, text, k, client = msg
                queue.append((rid, SuggestRequest(text, k, client)))
        except (EOFError, OSError):
            return  # the server is gone
        room = max(0, engine.batcher.max_batch - scheduler.in_flight)
        for rid, request in queue[:room]:
            future: Future = Future()
            scheduler.admit(request, future)
            waiting.append((rid, future))
        del queue[:room]
        if scheduler.in_flight:
            scheduler.step()
        answers, still = [], []
        for rid, future in waiting:
            if not future.done():
                still.append((rid, future))
            elif future.exception() is None:
                answers.append((rid, True, future.result().to_dict()))
            else:
                answers.append((rid, False, _picklable(future.exception())))
        waiting = still
        if answers:
            try:
                conn.send(answers)
            except OSError:
                return


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
        return exc
    except Exception:  # noqa: BLE001 - an exception that cannot cross processes: keep its message
        return RuntimeError(f"{type(exc).__name__}: {exc}")
