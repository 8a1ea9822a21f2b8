"""The HTTP API through FastAPI's TestClient: happy paths, every validation error (never a 5xx),
the body limit, streaming, and concurrent requests."""
from guards import HANG_GUARD
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from rnnlab.checkpoint import load_checkpoint  # noqa: E402
from rnnlab.config import MAX_K, MAX_LENGTH, MAX_TEXT_CHARS, ServeConfig  # noqa: E402
from rnnlab.decoding import generate  # noqa: E402
from rnnlab.serve import create_app  # noqa: E402
from tiny_keyboard_model import WORDS, tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def ckpt():
    return load_checkpoint(tiny_checkpoint(), "cpu")


@pytest.fixture(scope="module")
def client(ckpt):
    app = create_app(ckpt, ServeConfig(max_body_bytes=16 * 1024, suggest_worker="thread"))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_healthz_and_openapi(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["model"]["model"] == "lstm" and h["data"]["token"] == "char"
    schema = client.get("/openapi.json").json()
    assert {"/v1/suggest", "/v1/generate", "/v1/generate/stream", "/healthz"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # the Swagger page would load a CDN: off


def test_page_and_static_files_are_served_by_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="text"' in page.text and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    assert "https://" not in client.get("/static/app.js").text


def test_suggest_happy_path(client):
    r = client.post("/v1/suggest", json={"text": "the time trav", "k": 3, "client": "t1"})
    assert r.status_code == 200
    body = r.json()
    assert body["mode"] == "complete" and body["partial"] == "trav"
    assert body["completions"][0]["word"] == "traveller" and body["completions"][0]["append"] == "eller"
    assert len(body["completions"]) <= 3 and len(body["next_chars"]) == 3
    assert all(c["word"] in WORDS for c in body["completions"] if c["prob"] > 0.05)
    # one more character is at most one more step of the cached state (none for a character the
    # completion search tried first)
    r = client.post("/v1/suggest", json={"text": "the time trave", "k": 3, "client": "t1"})
    assert r.json()["context_tokens"] == 0
    r = client.post("/v1/suggest", json={"text": "the time trave77", "k": 3, "client": "t1"})
    assert r.json()["context_tokens"] == 2
    # k defaults to 5; an empty text gets first-word suggestions
    r = client.post("/v1/suggest", json={"text": ""})
    assert r.status_code == 200 and r.json()["mode"] == "next_word" and len(r.json()["next_chars"]) == 5


def test_generate_matches_the_library(client, ckpt):
    r = client.post("/v1/generate", json={"prefix": "the time", "length": 30})
    assert r.status_code == 200
    body = r.json()
    assert body["tokens"] == 30 and body["prefix"] == "the time"
    assert "the time" + body["text"] == generate(ckpt.model, ckpt.tokenizer, "the time", 30)
    seeded = {"prefix": "the ", "length": 40, "temperature": 1.0, "top_k": 5, "top_p": 0.9, "seed": 7}
    assert client.post("/v1/generate", json=seeded).json() == client.post("/v1/generate", json=seeded).json()
    assert client.post("/v1/generate", json={"prefix": "x", "length": 0}).json()["text"] == ""


def test_an_empty_prompt_is_one_request_in_the_cli_the_library_and_http(client, ckpt):
    """One rule for the empty prompt: ``generate`` with an empty prefix starts a new text from the
    start token, ``suggest`` with an empty text gives the first words; the CLI, the library and
    HTTP (both generate endpoints) answer alike."""
    import subprocess
    import sys

    from rnnlab.config import SuggestConfig
    from rnnlab.suggest import load_engine

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = lambda *args: subprocess.run([sys.executable, "-m", "rnnlab", *args], capture_output=True,  # noqa: E731
                                       text=True, timeout=HANG_GUARD, env=env)
    library = generate(ckpt.model, ckpt.tokenizer, "", 30)
    assert library and "<unk>" not in library
    r = client.post("/v1/generate", json={"prefix": "", "length": 30})
    assert r.status_code == 200 and r.json() == {"prefix": "", "text": library, "tokens": 30}
    streamed = client.post("/v1/generate/stream", json={"prefix": "", "length": 30}).text.splitlines()
    assert "".join(json.loads(line).get("text", "") for line in streamed) == library
    run = cli("generate", str(tiny_checkpoint()), "--prefix", "", "--length", "30")
    assert run.returncode == 0 and run.stdout == library + "\n", run.stderr

    engine = load_engine(ckpt, SuggestConfig())
    try:
        library = engine.suggest("", 4).to_dict()
    finally:
        engine.close()
    http = client.post("/v1/suggest", json={"text": "", "k": 4}).json()
    run = cli("suggest", str(tiny_checkpoint()), "", "--k", "4", "--json")
    assert run.returncode == 0, run.stderr
    for got in (http, json.loads(run.stdout)):
        assert got["mode"] == library["mode"] == "next_word" and got["partial"] == ""
        assert [c["word"] for c in got["completions"]] == [c["word"] for c in library["completions"]]
        assert library["completions"] and all(c["word"] in WORDS for c in library["completions"])
        assert [c["text"] for c in got["next_chars"]] == [c["text"] for c in library["next_chars"]]


def test_streaming_generation_sends_one_line_per_token(client):
    r = client.post("/v1/generate/stream", json={"prefix": "the time", "length": 30})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[-1] == {"done": True, "tokens": 30} and len(lines) == 31
    streamed = "".join(m["text"] for m in lines[:-1])
    assert streamed == client.post("/v1/generate", json={"prefix": "the time", "length": 30}).json()["text"]
    seeded = {"prefix": "the ", "length": 20, "temperature": 1.0, "seed": 3}
    assert client.post("/v1/generate/stream", json=seeded).text == client.post("/v1/generate/stream", json=seeded).text


BAD_SUGGEST = [
    ({}, "text"),
    ({"text": 3}, "text"),
    ({"text": None}, "text"),
    ({"text": "a" * (MAX_TEXT_CHARS + 1)}, "text"),
    ({"text": "a", "k": 0}, "k"),
    ({"text": "a", "k": MAX_K + 1}, "k"),
    ({"text": "a", "k": 2.5}, "k"),
    ({"text": "a", "k": "five"}, "k"),
    ({"text": "a", "client": "c" * 65}, "client"),
    ({"text": "a", "colour": "red"}, "colour"),
]
BAD_GENERATE = [
    ({}, "prefix"),
    ({"prefix": "a" * (MAX_TEXT_CHARS + 1)}, "prefix"),
    ({"prefix": "a", "length": -1}, "length"),
    ({"prefix": "a", "length": MAX_LENGTH + 1}, "length"),
    ({"prefix": "a", "temperature": -0.1}, "temperature"),
    ({"prefix": "a", "temperature": 101}, "temperature"),
    ({"prefix": "a", "temperature": 1e300}, "temperature"),
    ({"prefix": "a", "top_k": -1}, "top_k"),
    ({"prefix": "a", "top_p": 0}, "top_p"),
    ({"prefix": "a", "top_p": 1.5}, "top_p"),
    ({"prefix": "a", "seed": -1}, "seed"),
    ({"prefix": "a", "seed": 2**64}, "seed"),
    ({"prefix": "a", "seed": "x"}, "seed"),
]


@pytest.mark.parametrize("body, field", BAD_SUGGEST)
def test_suggest_validation_errors_are_422_with_a_message(client, body, field):
    r = client.post("/v1/suggest", json=body)
    assert r.status_code == 422
    assert field in r.json()["error"]


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/generate/stream"])
@pytest.mark.parametrize("body, field", BAD_GENERATE)
def test_generate_validation_errors_are_422_with_a_message(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422
    assert field in r.json()["error"]


@pytest.mark.parametrize("raw", ['{"text": "abc"', "{text: 1}", "\x00", '{"text": "a"} trailing'])
def test_malformed_json_is_400(client, raw):
    r = client.post("/v1/suggest", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]


@pytest.mark.parametrize("raw, ctype", [("[1, 2]", "application/json"), ("null", "application/json"),
                                        ("", "application/json"), ('{"text": "a"}', "text/plain"),
                                        ('{"prefix": "a", "temperature": NaN}', "application/json"),
                                        ('{"prefix": "a", "top_p": Infinity}', "application/json"),
                                        ('{"text": "\\ud800"}', "application/json")])
def test_other_bad_bodies_are_4xx_never_5xx(client, raw, ctype):
    path = "/v1/generate" if "prefix" in raw else "/v1/suggest"
    r = client.post(path, content=raw, headers={"content-type": ctype})
    assert 400 <= r.status_code < 500 and r.json()["error"]


def test_bodies_over_the_limit_are_413(client):
    big = json.dumps({"text": "a" * 20000})
    r = client.post("/v1/suggest", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    # a chunked body with no Content-Length is cut off as it passes the limit
    chunks = iter([b'{"text": "', b"a" * 10000, b"a" * 10000, b'"}'])
    r = client.post("/v1/suggest", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    # just under the limit is fine (and then it is the text cap that speaks)
    r = client.post("/v1/suggest", json={"text": "a" * MAX_TEXT_CHARS})
    assert r.status_code == 200


def test_wrong_method_and_path_are_4xx(client):
    assert client.get("/v1/suggest").status_code == 405
    assert client.post("/v1/nothing", json={}).status_code == 404


def test_odd_but_valid_text_never_fails(client):
    for text in ["é€😀 unknown characters", "\n\n\t", "1234", "'", "the time " * 400, "a-b_c"]:
        r = client.post("/v1/suggest", json={"text": text, "k": MAX_K})
        assert r.status_code == 200, (text, r.text)
        r = client.post("/v1/generate", json={"prefix": text, "length": 5, "temperature": 2.0, "top_k": 10**6})
        assert r.status_code == 200, (text, r.text)


def test_concurrent_requests_get_the_same_answers_as_serial_ones(client):
    texts = ["the time trav", "we sat in the gar", "the psy", "the traveller came back at din", "the "]
    serial = {t: client.post("/v1/suggest", json={"text": t}).json()["completions"] for t in texts}

    def ask(i):
        t = texts[i % len(texts)]
        # one client per text: a client that moves on to another text keeps the old one's words as its recent
        # words (rnnlab.suggest.recent), which may change its answers; here only the batching is under test
        r = client.post("/v1/suggest", json={"text": t, "client": f"c{i % len(texts)}"})
        g = client.post("/v1/generate", json={"prefix": t, "length": 20})
        return t, r.status_code, r.json()["completions"], g.status_code

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(40)))
    for t, status, completions, gstatus in results:
        assert status == 200 and gstatus == 200
        assert [c["word"] for c in completions] == [c["word"] for c in serial[t]]
        assert [c["prob"] for c in completions] == pytest.approx([c["prob"] for c in serial[t]], rel=1e-4)


def test_the_suggestion_process_answers_as_the_thread_does(ckpt):
    """``rnnlab serve``'s default: suggestions from an engine in a child process. Same answers as
    the in-process engine, the per-client cache kept in the child, bad requests still 422, and
    the child stopped when the app shuts down."""
    texts = ["the time trav", "we sat in the gar", "the ", "", "the traveller came back at din"]
    with TestClient(create_app(ckpt, ServeConfig(suggest_worker="thread")), raise_server_exceptions=False) as threaded:
        expected = {t: threaded.post("/v1/suggest", json={"text": t, "k": 4}).json() for t in texts}
    app = create_app(ckpt, ServeConfig(suggest_worker="process"))
    with TestClient(app, raise_server_exceptions=False) as c:
        backend = app.state.suggest_backend
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda t: c.post("/v1/suggest", json={"text": t, "k": 4}), texts * 3))
        for t, r in zip(texts * 3, got):
            assert r.status_code == 200
            body, want = r.json(), expected[t]
            assert body["elapsed_ms"] >= 0
            for key in ("mode", "partial", "model_text", "beam_steps"):
                assert body[key] == want[key]
            for key in ("completions", "next_chars"):
                assert [x.get("word", x.get("text")) for x in body[key]] == \
                    [x.get("word", x.get("text")) for x in want[key]]
                assert [x["prob"] for x in body[key]] == pytest.approx([x["prob"] for x in want[key]], rel=1e-5)
        # the child keeps each client's states: one more character is one step
        c.post("/v1/suggest", json={"text": "the time trav", "client": "p"})
        assert c.post("/v1/suggest", json={"text": "the time trave", "client": "p"}).json()["context_tokens"] == 0
        assert c.post("/v1/suggest", json={"text": "the time trave7", "client": "p"}).json()["context_tokens"] == 1
        assert c.post("/v1/suggest", json={"text": "a", "k": 0}).status_code == 422
        proc = backend._worker.proc
        assert proc.is_alive() and backend.status()["state"] == "ready"
    assert not proc.is_alive() and backend.status()["state"] == "closed"


def test_the_suggestion_process_reports_engine_errors_to_the_caller(ckpt):
    import asyncio

    from rnnlab.errors import UsageError
    from rnnlab.serve.backend import ProcessBackend

    backend = ProcessBackend(ckpt)
    try:
        async def ask():
            good = asyncio.ensure_future(backend.suggest("the psy", 3, "c"))
            with pytest.raises(UsageError, match="k must be"):
                await backend.suggest("the psy", 0, "c")  # the engine's own check, across the pipe
            return json.loads(await good)

        assert asyncio.run(ask())["completions"][0]["word"] == "psychologist"
    finally:
        backend.close()
    assert not backend._worker.proc.is_alive()


def test_the_fast_path_answers_as_the_route(ckpt):
    """Valid suggest requests skip the framework (SuggestFastPath); their responses are the route's."""
    from rnnlab.serve.middleware import SuggestFastPath

    app = create_app(ckpt, ServeConfig(suggest_worker="thread"))
    assert any(m.cls is SuggestFastPath for m in app.user_middleware)
    plain = create_app(ckpt, ServeConfig(suggest_worker="thread", fast_path=False))
    assert not any(m.cls is SuggestFastPath for m in plain.user_middleware)
    texts = ("the ti", "the tim", "", "é€😀 the")
    with TestClient(app) as c:
        via_fast = [c.post("/v1/suggest", json={"text": t, "k": 3, "client": "f"}) for t in texts]
    with TestClient(plain) as c:
        via_route = [c.post("/v1/suggest", json={"text": t, "k": 3, "client": "f"}) for t in texts]
    for a, b in zip(via_fast, via_route):
        assert a.status_code == b.status_code == 200
        assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
        ja, jb = a.json(), b.json()
        assert ja.pop("elapsed_ms") >= 0 and jb.pop("elapsed_ms") >= 0
        assert ja == jb


@pytest.mark.parametrize("path", ["/v1/suggest", "/v1/generate", "/v1/generate/stream"])
def test_deeply_nested_json_is_400_not_500(client, path):
    for raw in ("[" * 60000, '{"a":' * 30000 + "1" + "}" * 30000):
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code in (400, 413, 422) and "error" in r.json(), (r.status_code, r.text[:200])


@pytest.mark.parametrize("extreme", [{"temperature": 1e-300}, {"temperature": 1.0, "top_p": 1e-300},
                                     {"temperature": 100, "top_k": 1_000_000}, {"temperature": 5e-324}])
def test_extreme_but_valid_sampling_settings_answer(client, extreme):
    body = {"prefix": "the ", "length": 12, "seed": 3, **extreme}
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 200 and r.json()["tokens"] == 12
    lines = [json.loads(x) for x in client.post("/v1/generate/stream", json=body).text.splitlines()]
    assert lines[-1] == {"done": True, "tokens": 12} and len(lines) == 13


def test_head_requests_and_oversized_headers(client):
    assert client.head("/healthz").status_code == 200 and client.head("/").status_code == 200
    r = client.get("/healthz", headers={"x-big": "a" * 20_000})
    assert r.status_code == 431 and "headers" in r.json()["error"]


def test_the_host_header_must_name_this_server_when_asked(ckpt):
    """DNS rebinding: a page on another origin that resolves its name to 127.0.0.1 is refused."""
    app = create_app(ckpt, ServeConfig(suggest_worker="thread"), allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/healthz", headers={"host": "[::1]:8000"}).status_code == 200
        r = c.get("/healthz", headers={"host": "evil.example:8000"})
        assert r.status_code == 400 and "not this server's" in r.json()["error"]
        assert c.post("/v1/suggest", json={"text": "a"}, headers={"host": "evil.example"}).status_code == 400


def test_healthz_does_not_show_local_paths(client):
    source = client.get("/healthz").json()["data"]["source"]
    assert source is None or "/" not in source


def test_the_server_never_emits_unk(tmp_path):
    """A model that would always pick <unk>: neither endpoint ever sends it, greedy or sampled."""
    import shutil

    import torch

    from rnnlab.checkpoint import save_checkpoint

    ck = load_checkpoint(tiny_checkpoint(), "cpu")
    with torch.no_grad():
        ck.model.head.bias[ck.vocab.unk_id] = 1e4
    save_checkpoint(tmp_path / "unk", ck.model, ck.tokenizer, ck.model_config, ck.data_config)
    app = create_app(tmp_path / "unk", ServeConfig(suggest_worker="thread"))
    with TestClient(app) as c:
        for body in ({"prefix": "the ", "length": 40}, {"prefix": "the ", "length": 40, "temperature": 1.0, "seed": 1}):
            r = c.post("/v1/generate", json=body)
            assert r.status_code == 200 and "<unk>" not in r.json()["text"] and r.json()["tokens"] == 40
            lines = [json.loads(x) for x in c.post("/v1/generate/stream", json=body).text.splitlines()]
            assert lines[-1]["done"] and all("<unk>" not in x.get("text", "") for x in lines)
    shutil.rmtree(tmp_path / "unk")
