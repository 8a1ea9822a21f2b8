"""Online adaptation of the keyboard (rnnlab.suggest.adapt, rnnlab serve --adapt): each client's own
copy learns what it types, within bounds, never touching the shared model or the checkpoint."""
import torch
from fastapi.testclient import TestClient
from tiny_keyboard_model import CORPUS, tiny_checkpoint

from rnnlab import load_checkpoint
from rnnlab.config import AdaptConfig, ServeConfig
from rnnlab.adaptation import Adapter, dynamic_evaluate
from rnnlab.evaluation import evaluate
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
        weights = sum(p.numel() * 4 for p in ck.model.parameters())
        assert st["bytes_per_client"] > 2 * weights and st["max_bytes"] == 3 * st["bytes_per_client"]
        assert 0 < st["bytes"] <= st["max_bytes"] and st["largest_client_bytes"] <= st["bytes_per_client"]
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
    with TestClient(create_app(ck, ServeConfig(suggest_worker="thread"))) as c:  # off by default
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


def _reachable_tensor_bytes(root, shared):
    """Bytes of the distinct tensor storages reachable from ``root`` by following Python references
    (``gc.get_referents``), not entering ``shared`` objects, modules, classes or functions: what
    the object really keeps alive, found without the server's own accounting."""
    import gc
    import types

    seen, sizes, todo = set(shared), {}, [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            st = obj.untyped_storage()
            sizes[st.data_ptr()] = st.nbytes()
        todo.extend(gc.get_referents(obj))
    return sum(sizes.values())


def _live_tensor_bytes():
    import gc
    import warnings

    sizes = {}
    with warnings.catch_warnings():  # isinstance() on torch.distributed's deprecated reduce_op warns
        warnings.simplefilter("ignore", FutureWarning)
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor):
                st = obj.untyped_storage()
                sizes[st.data_ptr()] = st.nbytes()
    return sum(sizes.values())


def test_adapted_clients_measured_memory_stays_within_the_reported_bound():
    """Real HTTP (uvicorn in a thread of this process, so that the test can look at the server's
    objects): 30 clients type and adapt in turn with 3 adapted copies allowed. The tensors
    reachable from each client object fit the reported per-client bound and all of them
    ``max_bytes``; the reported ``bytes`` are what they hold; and with the garbage collector off,
    the process's live tensors stay within the bound however many clients were dropped (a client
    once stayed alive through a reference cycle after it was dropped: +710 MB after 160 clients)."""
    import gc
    import json
    import socket
    import threading
    import time
    import urllib.request

    import uvicorn

    from rnnlab.serve import create_app

    ck = load_checkpoint(tiny_checkpoint())
    app = create_app(ck, adapt=AdaptConfig(clients=3, lr=0.1, chunk=10))
    suggester = app.state.suggest_backend.suggester
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def post(body):
        req = urllib.request.Request(url + "/v1/suggest", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.status == 200

    def health():
        with urllib.request.urlopen(url + "/healthz", timeout=60) as r:
            return json.loads(r.read())["suggest_worker"]["adapt"]

    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)  # polling for the server to start, with a deadline
    gc.collect()
    gc.disable()  # nothing is freed by the collector from here on: only what is really dropped
    try:
        texts = [CORPUS[i * 37:i * 37 + 400] for i in range(30)]
        for n in range(3):  # the first three clients: as many as may be kept
            for i in range(40, 401, 60):
                post({"text": texts[n][:i], "k": 5, "client": f"user{n}"})
        full = _live_tensor_bytes()
        for n in range(3, 30):
            for i in range(40, 401, 60):
                post({"text": texts[n][:i], "k": 5, "client": f"user{n}"})
        st = health()
        grown = _live_tensor_bytes() - full
        shared = {id(suggester), id(ck.model), id(ck.tokenizer), id(suggester.scale), id(suggester.config),
                  *(id(p) for p in ck.model.parameters())}
        held = [_reachable_tensor_bytes(c, shared) for c in suggester.clients.values()]
    finally:
        gc.enable()
        server.should_exit = True
        thread.join(30)
        sock.close()
    print(f"per client: held {held}, reported bound {st['bytes_per_client']}; all: reported {st['bytes']}, "
          f"bound {st['max_bytes']}; live tensors grew {grown} bytes over 27 more clients")
    assert st["clients"] == len(held) == 3 and st["steps"] > 0
    assert all(0 < h <= st["bytes_per_client"] for h in held)
    assert sum(held) <= st["max_bytes"] and st["bytes"] == sum(held)
    assert grown <= st["max_bytes"], f"{grown} bytes of tensors kept by 27 dropped clients"


def test_without_the_training_text_eval_and_serve_fall_back_to_the_same_plain_sgd(tmp_path):
    """One adaptation rule for ``eval --dynamic`` and ``serve --adapt``: "rms" needs the training
    text; when it is gone both take plain SGD steps at the same fallback rate and say why; an
    explicit "sgd" keeps its own lr."""
    import dataclasses
    import json
    import shutil

    from rnnlab.adaptation import SGD_FALLBACK_LR, step_rule
    from rnnlab.config import DataConfig
    from rnnlab.pipeline import evaluate_checkpoint
    from rnnlab.serve import create_app

    assert step_rule(AdaptConfig(), None) == ("sgd", SGD_FALLBACK_LR)
    assert step_rule(AdaptConfig(lr=0.3), [1, 2]) == ("rms", 0.3)
    assert step_rule(AdaptConfig(method="sgd", lr=0.3), None) == ("sgd", 0.3)
    gone = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint(), gone)
    config = json.loads((gone / "config.json").read_text())
    config["data"]["path"] = str(tmp_path / "deleted.txt")
    (gone / "config.json").write_text(json.dumps(config))
    for f in gone.glob("words.*"):  # the word model names the text it was built from
        f.unlink()
    (tmp_path / "new.txt").write_text(NEW_TEXT)
    said = []
    r = evaluate_checkpoint(gone, DataConfig(path=str(tmp_path / "new.txt")), dynamic=AdaptConfig(chunk=10),
                            log=said.append)
    assert (r["dynamic"]["method"], r["dynamic"]["lr"]) == ("sgd", SGD_FALLBACK_LR)
    assert any("the training text is not available" in m and "plain SGD" in m for m in said), said
    said.clear()
    ck = load_checkpoint(gone)
    with TestClient(create_app(ck, adapt=AdaptConfig(clients=2), log=said.append)) as c:
        adapt = c.get("/healthz").json()["suggest_worker"]["adapt"]
    assert (adapt["method"], adapt["lr"]) == ("sgd", SGD_FALLBACK_LR)
    assert any("the training text is not available" in m for m in said), said
    with TestClient(create_app(dataclasses.replace(ck), adapt=AdaptConfig(method="sgd", lr=0.3))) as c:
        adapt = c.get("/healthz").json()["suggest_worker"]["adapt"]
    assert (adapt["method"], adapt["lr"]) == ("sgd", 0.3)
