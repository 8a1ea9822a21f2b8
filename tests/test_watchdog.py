"""The suggestion process's watchdog: a child that is alive but answers nothing while requests wait
is killed and replaced; what it held gets 503 with the reason, and the next requests are answered."""
import asyncio
import json
import os
import signal
import time

import pytest

from rnnlab.checkpoint import load_checkpoint
from rnnlab.serve.backend import ProcessBackend, WorkerUnavailable
from tiny_keyboard_model import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt():
    return load_checkpoint(tiny_checkpoint(), "cpu")


def _wait_for(check, what, limit=120.0):
    deadline = time.monotonic() + limit  # a hang guard, not a speed assertion
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_hung_suggestion_process_is_killed_and_replaced(ckpt):
    backend = ProcessBackend(ckpt, hang_seconds=1.0)
    try:
        first = backend._worker.proc
        assert json.loads(asyncio.run(backend.suggest("the psy", 3, "c")))["completions"]
        os.kill(first.pid, signal.SIGSTOP)  # alive, holding what it is sent, answering nothing

        async def ask():
            return await asyncio.wait_for(backend.suggest("the psy", 3, "c"), 120)  # a hang guard

        with pytest.raises(WorkerUnavailable, match=r"hung \(nothing answered for 1 s\) and was killed"):
            asyncio.run(ask())
        _wait_for(lambda: backend.status()["state"] == "ready" and backend.status()["restarts"] == 1, "the restart")
        assert not first.is_alive() and backend._worker.proc.pid != first.pid
        assert json.loads(asyncio.run(ask()))["completions"][0]["word"] == "psychologist"  # answered again
    finally:
        backend.close()


def test_a_busy_but_answering_process_is_left_alone_and_an_idle_one_is_never_hung(ckpt):
    """Answers arriving keep the child alive however long the queue; with nothing waiting, silence
    is not a hang."""
    backend = ProcessBackend(ckpt, hang_seconds=1.0)
    try:
        pid = backend._worker.proc.pid

        async def many():
            return await asyncio.gather(*(backend.suggest("the time trav" + "el" * (i % 5), 5, f"c{i}")
                                          for i in range(50)))

        assert len(asyncio.run(many())) == 50
        time.sleep(2.5)  # idle for longer than hang_seconds
        assert backend.status()["state"] == "ready" and backend.status()["restarts"] == 0
        assert backend._worker.proc.pid == pid
    finally:
        backend.close()


def test_health_says_unresponsive_before_the_watchdog_acts(ckpt):
    backend = ProcessBackend(ckpt, hang_seconds=1000.0)
    try:
        with backend._lock:  # a request sent 30 s ago and nothing answered since
            backend._pending[10**9] = (None, None, backend._worker.generation, time.monotonic() - 30)
            backend._last_answer = time.monotonic() - 30
        assert backend.status()["state"] == "unresponsive"
        with backend._lock:
            del backend._pending[10**9]
        assert backend.status()["state"] == "ready"
    finally:
        backend.close()


def test_a_real_server_answers_503_for_a_hung_worker_then_recovers():
    """`rnnlab serve --suggest-hang-seconds 1` over real HTTP: the worker stopped by a signal holds a
    request; the watchdog kills it, the request gets 503 naming the hang, the next ones 200."""
    from test_serve_process import _request, start_server, stop_server

    proc, url = start_server(tiny_checkpoint(), "--suggest-hang-seconds", "1")
    try:
        health = _request(url + "/healthz")[1]
        worker = health["suggest_worker"]["pid"]
        os.kill(worker, signal.SIGSTOP)
        status, body = _request(url + "/v1/suggest", {"text": "the psy", "k": 3}, timeout=120)
        assert status == 503 and "hung" in body["error"], body
        _wait_for(lambda: _request(url + "/healthz")[1]["suggest_worker"].get("restarts") == 1, "the restart")
        status, body = _request(url + "/v1/suggest", {"text": "the psy", "k": 3}, timeout=120)
        assert status == 200 and body["completions"][0]["word"] == "psychologist", body
    finally:
        err = stop_server(proc)
    assert "answered nothing for 1 s" in err
