"""The suggestion engine's own process (``ProcessBackend``'s child) and the two threads of the
server that talk to it over a pipe; see ``backend`` for the whole picture."""
from __future__ import annotations

import multiprocessing
import pickle
import queue
import sys
import threading

from ..checkpoint import Checkpoint
from ..errors import RnnlabError
from ..suggest import StateCache, SuggestRequest, load_engine, run_worker, words_summary


class EngineProcess:
    """One engine process and the two threads of this process that talk to it.

    The pipe is ``multiprocessing.connection`` (its own length-prefixed framing, pickled messages,
    blocking reads and writes only): a *reader* thread blocks in ``recv`` and hands each batch of
    answers to the event loop; a *writer* thread sends the queued requests, so the event loop never
    blocks on a full pipe and no end of the pipe is ever made non-blocking (which tears a message
    that arrives in two writes: the server's old bug).
    """

    def __init__(self, checkpoint: bytes, threads: int, engine_kwargs: dict, generation: int):
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs torch threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=engine_main, args=(child, checkpoint, threads, engine_kwargs),
                                name="rnnlab-suggest", daemon=True)
        self.proc.start()
        child.close()
        self.generation = generation
        self.hung = False  # the watchdog killed it
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []

    def wait_ready(self, timeout: float) -> dict:
        """Wait for the child's "ready" (its notes and word search, a dict); raises ``RnnlabError``
        with its reason if it does not come."""
        if not self.conn.poll(timeout):
            raise RnnlabError(f"the suggestion process did not start within {timeout:.0f} s")
        try:
            status, detail = self.conn.recv()
        except (EOFError, OSError):
            status, detail = "error", f"it exited (exit code {self.proc.exitcode})"
        if status != "ready":
            raise RnnlabError(f"the suggestion process failed to start: {detail}")
        return detail

    def start_threads(self, on_answers, on_exit) -> None:
        def read() -> None:
            try:
                while True:
                    on_answers(self, self.conn.recv())
            except (EOFError, OSError):
                pass
            except Exception as exc:  # noqa: BLE001 - an unreadable message: treat as a dead worker
                print(f"rnnlab: suggestion process: unreadable answer ({type(exc).__name__}: {exc})",
                      file=sys.stderr)
            on_exit(self)

        def write() -> None:
            while (msg := self.outbox.get()) is not None:
                try:
                    self.conn.send(msg)
                except (OSError, ValueError):
                    break  # the child is gone: the reader sees the end of the pipe too

        self.threads = [threading.Thread(target=read, name="rnnlab-suggest-read", daemon=True),
                        threading.Thread(target=write, name="rnnlab-suggest-write", daemon=True)]
        for t in self.threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to stop (a ``None`` message), then make sure it has; close the pipe."""
        self.outbox.put(None)  # ends the writer after what is queued
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout)
        try:
            self.conn.close()
        except OSError:
            pass
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout)


def process_state(pid: int | None) -> str | None:
    """The kernel's one-letter state of process ``pid`` (R, S, D, T stopped, t traced, Z zombie, X
    dead), or None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:][:1].decode()  # after "(comm)", which may hold spaces
    except (OSError, ValueError):
        return None


def checkpoint_bytes(checkpoint: Checkpoint) -> bytes:
    """The checkpoint (model included) pickled *by value*, for the child process.

    Handing the object itself to ``multiprocessing`` would share its tensors through file
    descriptors (torch's reductions); an int8 model's packed weights are unpacked into temporary
    tensors while pickling, whose descriptors are closed again before the child starts ("bad
    value(s) in fds_to_keep"). Bytes made here, in our own process, from our own objects, are
    the same for every model."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's TypedStorage deprecation notice while pickling storages
        return pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)


def engine_main(conn, checkpoint: bytes, threads: int, engine_kwargs: dict) -> None:
    """The child: the engine's batching loop (``rnnlab.suggest.run_worker``, as the worker thread
    runs it), fed by the pipe instead of a queue of threads."""
    import signal
    import warnings

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it closes the pipe
    try:
        torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = pickle.loads(checkpoint)  # our own bytes (checkpoint_bytes), never a file's
        model = checkpoint.model
        model.eval()
        kw = dict(engine_kwargs)
        cache = StateCache(kw.pop("cache_clients", 256), kw.pop("cache_per_client", 16))
        notes: list[str] = []
        engine = load_engine(checkpoint, kw.pop("config", None), cache=cache, log=notes.append, **kw)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"notes": notes, "words": words_summary(engine.words)}))

    def receive(block: bool):
        """The requests that have arrived (waiting for one only when ``block``); None: stop."""
        got = []
        try:
            if block:
                conn.poll(None)
            while conn.poll():
                msg = conn.recv()
                if msg is None:
                    return None
                rid, text, k, client = msg
                got.append((rid, SuggestRequest(text, k, client)))
        except (EOFError, OSError):
            return None  # the server is gone
        return got

    def deliver(answers) -> None:
        out = [(rid, True, a.to_dict()) if not isinstance(a, BaseException) else (rid, False, picklable(a))
               for rid, a in answers]
        try:
            conn.send(out)
        except OSError:
            pass  # the server is gone; receive() ends the loop

    run_worker(engine, receive, deliver, engine.max_batch)


def picklable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
        return exc
    except Exception:  # noqa: BLE001 - an exception that cannot cross processes: keep its message
        return RuntimeError(f"{type(exc).__name__}: {exc}")


__all__ = ["EngineProcess", "checkpoint_bytes", "engine_main", "process_state"]
