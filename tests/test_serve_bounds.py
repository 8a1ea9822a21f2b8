"""What one client can take from `rnnlab serve`, through real HTTP on loopback: a huge or slow
request head (refused after a bounded read, closed after a timeout), long generations (their own
bounded pool: 503 + Retry-After when full, while /healthz and the page answer), and `--int8` for
every model that has an int8 copy. The serving processes are the real CLI in a subprocess, except
where a generation must be held still on purpose (then uvicorn runs the app in a thread)."""
from guards import HANG_GUARD
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_serve_process import _healthy, _request, _wait_for, start_server, stop_server
from tiny_keyboard_model import CORPUS, tiny_checkpoint


@pytest.fixture(scope="module")
def server():
    proc, url = start_server(tiny_checkpoint(), "--read-timeout", "2", "--allowed-host", "example.org:8080",
                             "--allowed-host", "other.net")
    yield url
    stop_server(proc)


def _port(url):
    return int(url.rsplit(":", 1)[1])


# -- the request head: bounded before it is parsed -----------------------------------------------

def _stream_header(port, total, start=b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ", chunk=1 << 16):
    """Send ``start`` and then up to ``total`` bytes of one header value; stop when the server closes
    the connection. (bytes sent, the server's answer or b"")."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    sent = 0
    try:
        s.sendall(start)
        piece = b"a" * chunk
        while sent < total:  # bounded: at most ``total`` bytes, then the loop ends by itself
            s.sendall(piece)
            sent += len(piece)
    except OSError:  # the server closed the connection: the point
        pass
    try:
        answer = s.recv(1 << 16)
    except OSError:  # reset: unread bytes were left in the server's buffer
        answer = b""
    s.close()
    return sent, answer


def test_a_256_mib_header_is_refused_after_a_bounded_read_while_healthz_answers(server):
    """The server reads at most 32 KiB of request line and headers: a client streaming a 256 MiB
    header is cut off after the bytes the two socket buffers hold, never the whole header, and
    /healthz answers meanwhile and after."""
    health = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            health.append(_request(server + "/healthz", timeout=30)[0])

    t = threading.Thread(target=probe)
    t.start()
    start = time.perf_counter()
    try:
        sent, answer = _stream_header(_port(server), 256 << 20)
    finally:
        took = time.perf_counter() - start
        stop.set()
        t.join(60)
    print(f"refused after {sent / 2**20:.1f} MiB sent in {took:.3f} s; {len(health)} /healthz answers meanwhile")
    assert sent < 64 << 20, f"the server read {sent / 2**20:.0f} MiB of one header"
    assert answer in (b"",) or answer.startswith(b"HTTP/1.1 431 "), answer
    assert health and set(health) == {200}
    assert _request(server + "/healthz")[0] == 200


@pytest.mark.parametrize("start", [b"GET /" + b"x" * 40_000, b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 4000])
def test_a_long_url_or_many_headers_get_431_with_a_json_error(server, start):
    sent, answer = _stream_header(_port(server), 0, start=start)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert "over the limit" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def test_headers_under_the_bound_still_get_the_documented_431(server):
    req = urllib.request.Request(server + "/healthz", headers={f"X-H{i}": "v" * 1000 for i in range(20)})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 431 and "over the limit of 16384" in json.loads(e.value.read())["error"]


def _held_until_closed(port, dribble, limit_s=60.0):
    """Open a connection and dribble ``dribble`` bytes of a head, one every 0.1 s (cycling); return
    what the server answered once it closed the connection (b"" if it closed without a word), or
    None if it was still open after ``limit_s`` (polling with a deadline)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=limit_s)
    s.settimeout(0.1)
    got = b""
    deadline = time.monotonic() + limit_s
    i = 0
    try:
        while time.monotonic() < deadline:
            if dribble:
                s.sendall(dribble[i % len(dribble):i % len(dribble) + 1])
                i += 1
            try:
                data = s.recv(4096)
            except socket.timeout:
                continue
            if not data:
                return got
            got += data
    except OSError:
        return got
    finally:
        s.close()
    return None


def test_slow_and_silent_connections_are_closed_after_the_read_timeout(server):
    """--read-timeout 2: 40 connections that dribble their head a byte at a time and 10 that send
    nothing are all closed (408 for those that sent something); /healthz answers meanwhile."""
    results = {}

    def hold(i):
        results[i] = _held_until_closed(_port(server), b"GET /healthz HTTP/1.1\r\nX-Slow: yes\r\n" if i < 40 else b"")

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    _wait_for(lambda: len(results) > 0 or _request(server + "/healthz")[0] == 200, "healthz")
    assert _request(server + "/healthz")[0] == 200
    for t in threads:
        t.join(120)
    assert all(results[i] is not None for i in range(50)), "a connection was held open"
    assert all(results[i].startswith(b"HTTP/1.1 408 ") for i in range(40)), results[0]
    assert all(results[i] == b"" for i in range(40, 50))


def test_a_slow_body_gets_408(server):
    s = socket.create_connection(("127.0.0.1", _port(server)), timeout=60)
    s.sendall(b"POST /v1/suggest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n{\"text\": ")  # and then nothing more
    answer = b""
    while chunk := s.recv(4096):  # head and body may come in separate packets: read until closed
        answer += chunk
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 2 s" in answer, answer


def test_keep_alive_requests_still_work_on_one_connection(server):
    """The head bound is per request: many requests on one connection are each counted afresh."""
    s = socket.create_connection(("127.0.0.1", _port(server)), timeout=60)
    body = json.dumps({"text": "the time trav", "k": 3}).encode()
    req = (b"POST /v1/suggest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"X-Pad: " + b"p" * 12_000 + b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    answers = b""
    for _ in range(5):
        s.sendall(req)
        while answers.count(b"HTTP/1.1 200 ") < _ + 1 or not answers.endswith(b"}"):
            answers += s.recv(1 << 16)
    s.close()
    assert answers.count(b"HTTP/1.1 200 ") == 5


# -- --int8 for every model with an int8 copy ---------------------------------------------------

def _tiny_run(tmp, model):
    from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from rnnlab.pipeline import train_run

    (tmp / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    extra = {"window": 3, "embedding_dim": 8} if model == "unrolled" else {}
    train_run(DataConfig(path=str(tmp / "corpus.txt")), ModelConfig(model=model, hidden_size=16, **extra),
              TrainConfig(batch_size=4, num_steps=8), RunConfig(recipe="book", epochs=1, predict_every=0, device="cpu"),
              tmp / model, log=lambda _: None)
    return tmp / model


def test_serve_int8_answers_for_every_model_with_an_int8_copy(tmp_path):
    """`rnnlab serve DIR --int8` once failed at start for every model ("bad value(s) in fds_to_keep":
    the suggestion process could not be given the int8 model)."""
    servers = [start_server(_tiny_run(tmp_path, m), "--int8") for m in ("rnn", "gru", "lstm", "unrolled")]
    try:
        for proc, url in servers:
            health = _request(url + "/healthz")[1]
            assert health["status"] == "ok" and health["suggest_worker"]["state"] == "ready", health
            status, body = _request(url + "/v1/suggest", {"text": "the time trav", "k": 3})
            assert status == 200 and len(body["next_chars"]) == 3, body
            status, body = _request(url + "/v1/generate", {"prefix": "the ", "length": 20})
            assert status == 200 and body["tokens"] == 20, body
    finally:
        for proc, _ in servers:
            stop_server(proc)


# -- long generations: a pool of their own, never in front of /healthz or the page ---------------

@pytest.fixture
def held_server():
    """The app in uvicorn on a real socket, its model's one-token step held until ``release`` is set
    (so that generations stay running for as long as the test needs, on any machine)."""
    import uvicorn

    from rnnlab.checkpoint import load_checkpoint
    from rnnlab.config import ServeConfig
    from rnnlab.serve import create_app

    ck = load_checkpoint(tiny_checkpoint(), "cpu")
    release, step = threading.Event(), ck.model.step

    def held_step(*a, **k):
        release.wait(120)
        return step(*a, **k)

    ck.model.step = held_step  # sampling (temperature > 0) steps the model token by token
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    serve = ServeConfig(generate_workers=2, generate_queue=6, suggest_worker="thread")
    server = uvicorn.Server(uvicorn.Config(create_app(ck, serve), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait_for(lambda: server.started, "the server to start", 60)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", release
    release.set()
    server.should_exit = True
    thread.join(30)
    sock.close()


def _post(url, body, timeout=HANG_GUARD):
    """(status, headers, JSON or NDJSON text) of a POST."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_long_generations_queue_boundedly_and_never_hold_up_healthz_or_the_page(held_server):
    """2 workers + 6 waiting: of 20 long generations (and streams) 8 are admitted and 12 get 503 with
    Retry-After at once; /healthz, the page and its script answer while all 8 are held; then every
    admitted one finishes with 200."""
    url, release = held_server
    body = {"prefix": "the ", "length": 5, "temperature": 1.0, "seed": 1}
    results = []

    def client(i):
        results.append(_post(url + ("/v1/generate/stream" if i % 2 else "/v1/generate"), body))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    _wait_for(lambda: len(results) == 12, "the 12 refusals")
    assert all(status == 503 for status, _, _ in results)
    assert all(h.get("retry-after") == "1" and "the server is busy" in json.loads(text)["error"]
               for _, h, text in results)
    health = _request(url + "/healthz", timeout=10)[1]  # answered while every worker is held
    assert health["generation"]["active"] == 8 and health["generation"]["refused"] == 12, health
    page = urllib.request.urlopen(url + "/", timeout=10)
    assert page.status == 200 and b'id="text"' in page.read()
    assert urllib.request.urlopen(url + "/static/app.js", timeout=10).status == 200
    assert _post(url + "/v1/generate/stream", body, timeout=10)[0] == 503
    release.set()
    for t in threads:
        t.join(120)
    done = results[12:]
    assert len(done) == 8 and all(status == 200 for status, _, _ in done), done
    assert any('"done": true' in text for _, _, text in done) and any('"tokens":5' in text for _, _, text in done)
    _wait_for(lambda: _request(url + "/healthz")[1]["generation"]["active"] == 0, "the pool to empty")


# -- what every request gets: one Host, this server's; JSON errors; an honest /healthz -------------

def _raw(port, head: bytes) -> tuple[int, dict]:
    """(status, JSON body) of one raw request (headers exactly as given; it asks the server to close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(head)
    data = b""
    while chunk := s.recv(65536):  # until the server closes the connection
        data += chunk
    s.close()
    return int(data.split(b" ", 2)[1]), json.loads(data.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("hosts, status", [
    ([b"127.0.0.1"], 200), ([b"127.0.0.1", b"evil.example"], 400), ([b"evil.example", b"127.0.0.1"], 400), ([], 400),
    ([b"example.org:8080"], 200), ([b"example.org:9999"], 400), ([b"example.org"], 400),
    ([b"other.net"], 200), ([b"other.net:1234"], 200), ([b"localhost:5"], 200),
])
def test_exactly_one_host_header_and_allowed_hosts_with_ports(server, hosts, status):
    head = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"Host: %s\r\n" % h for h in hosts) + b"Connection: close\r\n\r\n"
    got, body = _raw(_port(server), head)
    assert got == status, body
    if status == 400:
        assert "Host" in body["error"], body


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("GET", "/nope", None, 404, "no such endpoint: GET /nope"),
    ("GET", "/v1/suggest", None, 405, "GET is not allowed on /v1/suggest"),
    ("DELETE", "/healthz", None, 405, "DELETE is not allowed on /healthz"),
    ("GET", "/static/missing.js", None, 404, "no such endpoint"),
    ("POST", "/v1/suggest", b"{not json", 400, "malformed JSON"),
    ("POST", "/v1/generate", b"[1, 2]", 422, "invalid request"),
])
def test_errors_are_the_api_s_json_never_the_framework_s(server, method, path, body, status, fragment):
    req = urllib.request.Request(server + path, data=body, method=method, headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    answer = json.loads(e.value.read())
    assert e.value.code == status and fragment in answer["error"], answer
    assert set(answer) <= {"error", "detail"} and isinstance(answer.get("detail", []), list)


def test_a_stopped_suggestion_process_is_not_reported_ready(server):
    health = _request(server + "/healthz")[1]
    pid = health["suggest_worker"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30  # the signal is delivered asynchronously: wait until the kernel says so
        while time.monotonic() < deadline and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            time.sleep(0.01)
        status, health = _request(server + "/healthz")
        assert status == 503 and health["status"] == "degraded" and health["suggest_worker"]["state"] == "stopped"
    finally:
        os.kill(pid, signal.SIGCONT)
    status, health = _request(server + "/healthz")
    assert status == 200 and health["suggest_worker"]["state"] == "ready"
    assert _request(server + "/v1/suggest", {"text": "the time trav", "k": 3})[0] == 200
