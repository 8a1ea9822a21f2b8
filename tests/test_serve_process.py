"""`rnnlab serve` as users run it: the real CLI in a subprocess (uvicorn, httptools, uvloop, the
suggestion process), spoken to over real HTTP on loopback. These are the transport's failures:
large answers crossing the pipe, and a suggestion process that dies."""
from guards import HANG_GUARD
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tiny_keyboard_model import tiny_checkpoint


def _request(url, body=None, timeout=60):
    """(status, parsed JSON) of a GET (no body) or a JSON POST."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_for(predicate, what, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)  # polling a condition with a deadline, not a sleep that decides the outcome
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(url):
    try:
        return _request(url + "/healthz", timeout=5)[0] == 200
    except urllib.error.URLError:  # not listening yet
        return False


def start_server(ckpt, *args):
    """A real `rnnlab serve` on a free port: (process, base URL), once /healthz answers."""
    proc = subprocess.Popen([sys.executable, "-m", "rnnlab", "serve", str(ckpt), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    url = f"http://127.0.0.1:{m.group(1)}"
    _wait_for(lambda: _healthy(url) or proc.poll() is not None, "the server to be ready")
    assert proc.poll() is None, proc.stderr.read()
    return proc, url


def _interrupt(proc):
    """Ctrl-C, then kill after 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def stop_server(proc):
    """Stop a server of ``start_server``; its stderr, which must hold no traceback."""
    _interrupt(proc)
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def server():
    proc, url = start_server(tiny_checkpoint())
    yield url
    _interrupt(proc)


@pytest.mark.parametrize("char", ["x", "分", "😀"])
def test_large_answers_cross_the_pipe_every_time(server, char):
    """4000 characters and k = 20 (the documented limits) make answers larger than a pipe write:
    eight in a row all answer, and ordinary requests still do afterwards."""
    for i in range(8):
        status, body = _request(server + "/v1/suggest", {"text": char * 4000, "k": 20, "client": f"big{i % 2}"})
        assert status == 200, body
        assert len(body["next_chars"]) == 20 and body["model_text"] == char * 4000
    status, body = _request(server + "/v1/suggest", {"text": "the time trav", "k": 3})
    assert status == 200 and body["completions"][0]["word"] == "traveller"
    pass


def test_many_clients_with_large_and_small_answers_at_once(server):
    texts = ["x" * 4000, "the time trav", "分" * 3000, "", "we sat in the gar", "😀" * 2000]
    results = []

    def client(i):
        for j in range(6):
            results.append(_request(server + "/v1/suggest", {"text": texts[(i + j) % len(texts)], "k": 20,
                                                             "client": str(i)}))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 36 and all(status == 200 for status, _ in results), [s for s, _ in results]


def test_a_killed_suggestion_process_is_restarted(server):
    """In-flight requests get 503 with a message; /healthz says so; then a new process answers."""
    health = _request(server + "/healthz")[1]
    assert health["status"] == "ok" and health["suggest_worker"]["state"] == "ready"
    pid, restarts = health["suggest_worker"]["pid"], health["suggest_worker"]["restarts"]
    os.kill(pid, signal.SIGSTOP)  # it cannot answer: the next request stays in flight
    answer = {}
    t = threading.Thread(target=lambda: answer.setdefault("r", _request(server + "/v1/suggest", {"text": "the ti"})))
    t.start()
    _wait_for(lambda: _request(server + "/healthz")[1]["suggest_worker"]["in_flight"] >= 1, "the request in flight")
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    status, body = answer["r"]
    assert status == 503 and "suggestion process stopped" in body["error"]
    health = _wait_for(lambda: (h := _request(server + "/healthz"))[0] == 200 and h[1], "the restart")
    worker = health["suggest_worker"]
    assert worker["restarts"] == restarts + 1 and worker["pid"] != pid and worker["state"] == "ready"
    status, body = _request(server + "/v1/suggest", {"text": "the time trav", "k": 3})
    assert status == 200 and body["completions"][0]["word"] == "traveller"


def test_requests_sent_while_the_process_restarts_are_answered_or_refused_never_lost(server):
    pid = _request(server + "/healthz")[1]["suggest_worker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    statuses = [_request(server + "/v1/suggest", {"text": "the psy", "k": 2})[0] for _ in range(5)]
    assert set(statuses) <= {200, 503}
    _wait_for(lambda: _request(server + "/healthz")[0] == 200, "the restart")
    assert _request(server + "/v1/suggest", {"text": "the psy", "k": 2})[0] == 200


# -- one word search: the same words from every entry point -----------------------------------------------

TEXTS = ["the time trav", "we sat in the ", "the psychologist looked at the m", "", "at dinner time. the tr"]


def test_suggest_serve_the_library_and_eval_give_the_same_words(server):
    """`rnnlab suggest`, `rnnlab serve` (the page asks the same endpoint), the library's engine and the
    keyboard `eval --keyboard` measures all answer with the served word search: the same words."""
    from rnnlab.keyboard import RnnlabKeyboard
    from rnnlab.suggest import load_engine, split_partial_word

    health = _request(server + "/healthz")[1]
    assert health["words"]["lexicon"] > 20 and health["words"]["order"] == 3  # the word search is on
    engine = load_engine(tiny_checkpoint())
    keyboard = RnnlabKeyboard.from_checkpoint(tiny_checkpoint())
    try:
        for i, text in enumerate(TEXTS):
            cli = subprocess.run([sys.executable, "-m", "rnnlab", "suggest", str(tiny_checkpoint()), text, "--json"],
                                 capture_output=True, text=True, timeout=HANG_GUARD)
            said = [line for line in cli.stderr.splitlines() if "torch thread" not in line]  # the thread choice is said
            assert cli.returncode == 0 and said == [], cli.stderr
            by_cli = [c["word"] for c in json.loads(cli.stdout)["completions"]]
            status, body = _request(server + "/v1/suggest", {"text": text, "k": 5, "client": f"same-{i}"})
            assert status == 200
            by_http = [c["word"] for c in body["completions"]]
            by_library = [c.word for c in engine.suggest(text, 5).completions]
            context, partial = split_partial_word(text)
            by_eval = keyboard.completions_batch([(context, partial)], 5, [f"s{i}"])[0]
            assert by_cli == by_http == by_library == by_eval and by_cli, text
            assert [c["prob"] for c in json.loads(cli.stdout)["completions"]] == pytest.approx(
                [c["prob"] for c in body["completions"]], rel=1e-4)
    finally:
        engine.close()
        keyboard.close()


def test_each_client_has_its_own_recent_words_by_default(server):
    def words(text, client):
        status, body = _request(server + "/v1/suggest", {"text": text, "k": 20, "client": client})
        assert status == 200
        return [c["word"] for c in body["completions"]]

    words("we met the zeppelin crew. ", "alice")  # a message alice sent...
    assert "zeppelin" in words("the z", "alice")  # ...is remembered when she starts the next one
    assert "zeppelin" not in words("the z", "bob")
    assert "zeppelin" not in words("the z", "")  # anonymous requests see their own text only
