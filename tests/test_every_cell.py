"""Every advertised path works for every cell in the registry (``cell_names()``) and for the
unrolled network: a tiny model trained through the CLI in a subprocess (the book's recipe, and the
default recipe with no flag but --model, --epochs and --hidden-size), then generate, suggest,
export (float32 and int8, checked by onnxruntime, the state in the graph), --int8 generate, suggest
and eval, resume, and the server's API through FastAPI's TestClient.

One model per cell, trained once (a module-scoped fixture) and shared by the tests of that cell.
Training and resuming run ``python -m rnnlab`` in a subprocess; the other commands run the same
``rnnlab.cli.main`` in this process (parsing, the command, the one-line error path), which saves
a Python start per command. A new cell module gets all of this for free.
"""
from __future__ import annotations

from guards import HANG_GUARD
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shipped import shipped_cells

from rnnlab.checkpoint import load_checkpoint, load_for_inference
from rnnlab.cli import main
from rnnlab.config import ServeConfig
from rnnlab.models.cells import get_cell
from tiny_keyboard_model import SENTENCES

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CELLS = shipped_cells()  # a subprocess would not know a toy cell a test module registered
MODELS = [*CELLS, "unrolled"]
TEXT = " ".join(SENTENCES * 10)  # ~2,000 characters
PREFIX = "the time"
# int8 against float32, as tests/test_export.py bounds it: max |logit difference| within this share
# of the float logits' range (max - min) over the export check's stream
INT8_BOUND = 0.05


def _model_flags(name: str) -> list[str]:
    """The book recipe's tiny model for ``name``: no --impl (the book's concise, or for a cell
    without torch layers one it has), an embedding as wide as the state where the cell's blocks
    need it."""
    if name == "unrolled":
        return ["--embedding-dim", "8", "--window", "3"]
    return ["--embedding-dim", "16"] if get_cell(name).width_is_embedding else []


def _cli(*args, timeout=HANG_GUARD) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _main(capsys, *args) -> tuple[int, str, str]:
    """``rnnlab ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "t.txt"
    path.write_text(TEXT + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=MODELS)
def run(request, corpus, tmp_path_factory) -> Path:
    """A checkpoint of ``--model NAME`` trained for one epoch with the book's recipe (Adam for a
    model that has learnt something after ~20 steps)."""
    out = tmp_path_factory.mktemp(request.param) / "run"
    r = _cli("train", corpus, "--recipe", "book", "--model", request.param, *_model_flags(request.param),
             "--preset", "letters", "--max-tokens", "1600", "--val-fraction", "0.1", "--hidden-size", "16",
             "--batch-size", "4", "--num-steps", "16", "--optimizer", "adam", "--lr", "0.02", "--epochs", "1",
             "--predict-every", "0", "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())["model"]
    assert cfg["model"] == request.param
    if request.param in CELLS:
        impls = get_cell(request.param).impls
        assert cfg["impl"] == ("concise" if "concise" in impls else "fast" if "fast" in impls else impls[0])
    return out


def test_generate_and_suggest(run, capsys):
    code, out, err = _main(capsys, "generate", run, "--prefix", PREFIX, "--length", "20", "--seed", "1")
    assert code == 0 and out.startswith(PREFIX) and len(out.rstrip("\n")) == len(PREFIX) + 20, err
    code, out, err = _main(capsys, "suggest", run, "the time trav", "--json")
    s = json.loads(out)
    assert code == 0 and s["mode"] == "complete" and s["partial"] == "trav" and len(s["next_chars"]) == 5, err
    assert all(c["word"].startswith("trav") for c in s["completions"])


def _logit_range(ckpt: Path, steps: int = 200) -> float:
    """max - min of the float model's logits over the export check's stream (seed 0, one row)."""
    model = load_checkpoint(ckpt).model
    stream = torch.randint(0, model.cfg.vocab_size, (steps, 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = model(stream.T)  # (1, steps, V)
    return float(logits.max() - logits.min())


def test_export_float_and_int8_carry_the_state(run, tmp_path, capsys):
    from rnnlab.export import check_onnx, onnx_session

    out = tmp_path / "onnx"
    code, printed, err = _main(capsys, "export", run, "--format", "onnx", "--int8", "--out", out)
    assert code == 0 and "model.int8.onnx" in printed, err
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.int8.onnx", "model.onnx", "vocab.json"]
    meta = json.loads((out / "export.json").read_text())
    names = list(load_checkpoint(run).model.state_names)  # (h,), (h, c), (h, shift), (prev,)
    assert [i["name"] for i in meta["inputs"]] == ["ids", *names]
    assert [o["name"] for o in meta["outputs"]] == ["logits", *(f"{n}_next" for n in names)]
    assert meta["checks"]["float32_max_abs_logit_diff"] <= 1e-4
    assert check_onnx(out, run, steps=60, rows=3) <= 1e-4  # several rows, each its own state carried
    bound = INT8_BOUND * _logit_range(run)
    assert 0 < meta["checks"]["int8_max_abs_logit_diff"] <= bound
    for name in meta["files"].values():  # the graph reads the state it is given: history changes the logits
        sess = onnx_session(out / name)
        state = {s["input"]: np.full([1 if d == "N" else d for d in spec["shape"]], s["initial"],
                                     dtype=np.int64 if spec["dtype"] == "int64" else np.float32)
                 for s, spec in zip(meta["state"], meta["inputs"][1:])}
        fresh = sess.run(None, {"ids": np.array([1]), **state})
        evolved = state
        for token in (2, 3, 4):
            got = sess.run(None, {"ids": np.array([token]), **evolved})
            evolved = dict(zip(names, got[1:]))
        after = sess.run(None, {"ids": np.array([1]), **evolved})
        assert np.abs(after[0] - fresh[0]).max() > 1e-3


def test_int8_generate_suggest_and_eval(run, capsys):
    code, out, err = _main(capsys, "generate", run, "--int8", "--prefix", PREFIX, "--length", "20")
    assert code == 0 and out.startswith(PREFIX) and len(out.rstrip("\n")) == len(PREFIX) + 20, err
    code, out, err = _main(capsys, "suggest", run, "the time trav", "--int8", "--json")
    assert code == 0 and json.loads(out)["partial"] == "trav" and len(json.loads(out)["next_chars"]) == 5, err
    losses = []
    for flags in ([], ["--int8"]):
        code, out, err = _main(capsys, "eval", run, "--json", *flags)
        assert code == 0, err
        losses.append(json.loads(out)["loss"])
    assert losses[0] != losses[1] and abs(losses[0] - losses[1]) < 0.05  # the int8 copy ran, and is close


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
def test_serve(run, int8):
    """The server's API in this process, the suggestion engine on a thread (`--suggest-worker thread`)."""
    from fastapi.testclient import TestClient

    from rnnlab.serve import create_app

    name = json.loads((run / "config.json").read_text())["model"]["model"]
    app = create_app(load_for_inference(run, int8=int8), ServeConfig(suggest_worker="thread"))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/healthz").json()["model"]["model"] == name
        r = c.post("/v1/suggest", json={"text": "the time trav", "k": 3, "client": "a"})
        assert r.status_code == 200 and r.json()["partial"] == "trav" and len(r.json()["next_chars"]) == 3
        r = c.post("/v1/generate", json={"prefix": PREFIX, "length": 12, "seed": 1})
        assert r.status_code == 200 and r.json()["tokens"] == 12
        lines = [json.loads(x) for x in c.post("/v1/generate/stream", json={"prefix": PREFIX, "length": 8}).text.splitlines()]
        assert lines[-1] == {"done": True, "tokens": 8}


@pytest.mark.parametrize("name", MODELS)
def test_the_default_recipe_needs_no_other_flag_and_resumes(name, corpus, tmp_path):
    """`rnnlab train FILE --model X --epochs 1 --hidden-size 16`: the recipe picks the
    implementation and, for a cell whose blocks need it, the embedding; `--resume --epochs 2`
    continues the run from its checkpoint."""
    out = tmp_path / "run"
    r = _cli("train", corpus, "--model", name, "--epochs", "1", "--hidden-size", "16", "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("recipe default")
    cfg = json.loads((out / "config.json").read_text())["model"]
    if name in CELLS:
        cell = get_cell(name)
        assert cfg["impl"] in cell.impls
        assert cfg["embedding_dim"] == 16 if cell.width_is_embedding else cfg["embedding_dim"] > 0
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    r = _cli("train", "--resume", "--out", out, "--epochs", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"resuming {out} at epoch 1" in r.stdout
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics if isinstance(m["epoch"], int)] == [1, 2]
    assert metrics[:len(first)] == first  # the first epoch's record kept as it was
    assert load_checkpoint(out).info["epoch"] == 2
