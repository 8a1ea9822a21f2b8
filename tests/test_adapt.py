"""Online adaptation of the keyboard (rnnlab.suggest.adapt, rnnlab serve --adapt): each client's own
copy learns what it types, within bounds, never touching the shared model or the checkpoint."""
import torch
from fastapi.testclient import TestClient
from tiny_keyboard_model import CORPUS, tiny_checkpoint

from rnnlab import load_checkpoint
from rnnlab.config import AdaptConfig
from rnnlab.evaluation import Adapter, dynamic_evaluate, evaluate
from rnnlab.suggest import AdaptiveSuggester, SuggestRequest
from rnnlab.suggest.adapt import MAX_STEPS_PER_REQUEST, finished_text

NEW_TEXT = "robin dances with ostriches. " * 8  # words the tiny model never saw, in letters it knows


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_finished_text_stops_at_the_last_boundary():
    assert finished_text("the time trav") == "the time "
    assert finished_text("don't stop") == "don't "
    assert finished_text("hello.") == "hello."
    assert finished_text("word") == "" and finished_text("") == ""


def test_adapter_equals_dynamic_evaluation():
    ck = load_checkpoint(tiny_checkpoint())
    ids = torch.tensor(ck.vocab.encode(list(CORPUS[:200])))
    a = Adapter(ck.model, 0.05, 20)
    total, count = a.read(ids)
    d = dynamic_evaluate(ck.model, ids, 0.05, 20, method="sgd")
    assert count == d["tokens"] == 199 and abs(total / count - d["loss"]) < 1e-9 and a.steps == 10
    # reading in two parts (the second starting where the first's targets ended) == reading whole
    b = Adapter(ck.model, 0.05, 20)
    t1, c1 = b.read(ids[:101])
    t2, c2 = b.read(ids[100:])
    assert c1 + c2 == 199 and abs((t1 + t2) - total) < 1e-6


def test_a_client_learns_its_words_and_nobody_else_changes():
    ck = load_checkpoint(tiny_checkpoint())
    before = _weights(ck.model)
    s = AdaptiveSuggester(ck.model, ck.tokenizer, settings=AdaptConfig(lr=0.1, chunk=20))  # no training text: SGD
    try:
        typed = ""
        for i in range(0, len(NEW_TEXT), 7):  # a user typing, a few characters per request
            typed = NEW_TEXT[:i]
            s.suggest(typed, 3, "alice")
        c = s.clients["alice"]
        assert c.adapter.steps > 0 and s.steps == c.adapter.steps
        ids = torch.tensor(ck.vocab.encode(list(NEW_TEXT)))
        assert evaluate(c.adapter.model, ids)["loss"] < evaluate(ck.model, ids)["loss"] - 0.2  # it learnt the text
        # the shared model, and so the checkpoint's weights, are untouched; bob gets the shared answers
        assert all(torch.equal(a, b) for a, b in zip(before, _weights(ck.model)))
        shared = s.base.suggest_batch([SuggestRequest("robin dan", 3, "carol")])[0].to_dict()
        assert s.suggest("robin dan", 3, "bob").to_dict() == shared
        # alice's suggestions come from her own copy
        assert s.suggest(NEW_TEXT + "robin dances with os", 3, "alice").to_dict() != \
            s.base.suggest_batch([SuggestRequest(NEW_TEXT + "robin dances with os", 3, "dave")])[0].to_dict()
        assert s.reset("alice") and not s.reset("alice") and "alice" not in s.clients
    finally:
        s.close()


def test_memory_and_work_are_bounded():
    ck = load_checkpoint(tiny_checkpoint())
    s = AdaptiveSuggester(ck.model, ck.tokenizer, settings=AdaptConfig(clients=3, lr=0.1, chunk=10))
    try:
        for n in range(7):
            s.suggest("the time machine ", 2, f"user{n}")
        st = s.status()
        assert len(s.clients) == st["clients"] == 3 and list(s.clients) == ["user4", "user5", "user6"]
        per = sum(p.numel() * 4 for p in ck.model.parameters())
        assert st["bytes_per_client"] == per and st["max_bytes"] == 3 * per
        # a long pasted text is learnt a bounded number of steps per request
        s.suggest(CORPUS[:2000], 2, "paste")
        assert s.clients["paste"].adapter.steps == MAX_STEPS_PER_REQUEST
        s.suggest(CORPUS[:2000], 2, "paste")
        assert s.clients["paste"].adapter.steps == 2 * MAX_STEPS_PER_REQUEST
        # deleting text does not unlearn; the state re-reads the common part; anonymous clients teach nothing
        s.suggest(CORPUS[:50], 2, "paste")
        assert s.clients["paste"].pos <= 50
        s.suggest(NEW_TEXT, 2, "")
        assert "" not in s.clients
    finally:
        s.close()


def test_serve_adapt_over_http():
    from rnnlab.serve import create_app

    ck = load_checkpoint(tiny_checkpoint())
    with TestClient(create_app(ck)) as c:  # off by default
        r = c.post("/v1/adapt/reset", json={"client": "a"})
        assert r.status_code == 409 and "--adapt" in r.json()["error"]
    with TestClient(create_app(ck, adapt=AdaptConfig(clients=2, lr=0.1))) as c:
        for i in range(0, 200, 9):
            r = c.post("/v1/suggest", json={"text": NEW_TEXT[:i], "k": 3, "client": "tab1"})
            assert r.status_code == 200 and r.json()["completions"]
        h = c.get("/healthz").json()["suggest_worker"]
        assert h["kind"] == "adapt" and h["adapt"]["clients"] == 1 and h["adapt"]["steps"] > 0
        assert c.post("/v1/adapt/reset", json={"client": "tab1"}).json() == {"client": "tab1", "reset": True}
        assert c.post("/v1/adapt/reset", json={"client": "tab1"}).json()["reset"] is False
        for bad in ({}, {"client": ""}, {"client": "x" * 65}, {"client": 3}, {"client": "a", "extra": 1}):
            r = c.post("/v1/adapt/reset", json=bad)
            assert r.status_code == 422 and "error" in r.json(), bad
        assert c.get("/healthz").json()["suggest_worker"]["adapt"]["clients"] == 0
