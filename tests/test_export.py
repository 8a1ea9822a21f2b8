"""ONNX export (one step, float32 and int8) and int8 PyTorch, on tiny untrained models."""
from guards import HANG_GUARD
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from rnnlab import (
    DataConfig,
    ModelConfig,
    Vocab,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from rnnlab.export import check_onnx, export_onnx, load_quantized, quantize_model

from rnnlab.data.tokenizer import Tokenizer

VOCAB = Vocab.build(list("the time traveller smiled at us, 0123456789!"))
TEXT = Tokenizer(VOCAB, preset="letters")
# every cell x one-hot/embedding x 1/2 layers, saved from each impl in turn (exported as concise)
SHAPES = [(cell, emb, layers) for cell in ("lstm", "gru", "rnn") for emb in (0, 8) for layers in (1, 2)]
RECURRENT = [(*shape, ("concise", "scratch", "fast")[i % 3]) for i, shape in enumerate(SHAPES)]
# int8 vs float32: max |logit difference| <= 3% of the float logits' range (max - min). Observed on
# these models: 0.6-1.5% (ONNX and PyTorch alike); onnxruntime's saturating full-range int8 kernels
# gave 8-26%, uint8 weights in DynamicQuantizeLSTM 3-11%.
INT8_BOUND = 0.03


def _checkpoint(root, model="lstm", embedding_dim=0, num_layers=1, impl="concise", hidden_size=24, **kw):
    cfg = ModelConfig(model=model, impl=impl, vocab_size=len(VOCAB), hidden_size=hidden_size,
                      embedding_dim=embedding_dim, num_layers=num_layers, **kw)
    torch.manual_seed(0)
    net = build_model(cfg)
    with torch.no_grad():
        net.head.weight.mul_(10)  # logits spread over a few nats, as in a trained model
    d = root / f"{model}-{impl}-e{embedding_dim}-l{num_layers}-{kw.get('activation', '')}{kw.get('window', '')}"
    save_checkpoint(d, net, TEXT, cfg, DataConfig(dataset="timemachine", preset="letters"), info={"epoch": 1})
    return d


def _logit_range(ckpt, steps=200) -> float:
    """max - min of the float model's logits over check_onnx's stream (seed 0, one row)."""
    model = load_checkpoint(ckpt, impl="concise").model
    stream = torch.randint(0, len(VOCAB), (steps, 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = model(stream.T)  # (1, steps, V)
    return float(logits.max() - logits.min())


@pytest.mark.parametrize("cell,emb,layers,impl", RECURRENT)
def test_onnx_step_matches_pytorch(tmp_path, cell, emb, layers, impl):
    ckpt = _checkpoint(tmp_path, cell, emb, layers, impl=impl)
    meta = export_onnx(ckpt, tmp_path / "onnx")
    assert meta["checks"]["float32_max_abs_logit_diff"] <= 1e-4  # 200 steps, one row
    assert check_onnx(tmp_path / "onnx", ckpt, steps=200, rows=5) <= 1e-4  # dynamic batch


def test_export_files_and_metadata(tmp_path):
    ckpt = _checkpoint(tmp_path, "lstm", 8, 2)
    meta = export_onnx(ckpt, tmp_path / "onnx", int8=True)
    out = tmp_path / "onnx"
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.int8.onnx", "model.onnx", "vocab.json"]
    assert json.loads((out / "export.json").read_text()) == meta
    assert Vocab.from_json((out / "vocab.json").read_text()) == VOCAB
    assert (meta["cell"], meta["layers"], meta["hidden_size"], meta["vocab_size"]) == ("lstm", 2, 24, len(VOCAB))
    assert meta["data"]["preset"] == "letters" and meta["data"]["token"] == "char"
    assert [i["name"] for i in meta["inputs"]] == ["ids", "h", "c"]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "h_next", "c_next"]
    assert meta["inputs"][1]["shape"] == [2, "N", 24] and meta["files"] == {"float32": "model.onnx",
                                                                             "int8": "model.int8.onnx"}
    assert meta["rnnlab_version"] and meta["usage"]
    for name in meta["files"].values():  # dynamic batch: N = 1 and N = 5 in one session
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        for n in (1, 5):
            feed = {"ids": np.arange(n, dtype=np.int64), "h": np.zeros((2, n, 24), np.float32),
                    "c": np.zeros((2, n, 24), np.float32)}
            logits, h, c = sess.run(None, feed)
            assert logits.shape == (n, len(VOCAB)) and h.shape == c.shape == (2, n, 24)


@pytest.mark.parametrize("cell,emb,layers,kw", [("lstm", 0, 1, {}), ("lstm", 8, 2, {}), ("gru", 8, 2, {}),
                                                ("gru", 0, 1, {}), ("rnn", 0, 2, {}),
                                                ("rnn", 8, 1, {"activation": "relu"})])
def test_int8_onnx_and_pytorch_stay_close(tmp_path, cell, emb, layers, kw):
    ckpt = _checkpoint(tmp_path, cell, emb, layers, hidden_size=96, **kw)
    meta = export_onnx(ckpt, tmp_path / "onnx", int8=True)
    bound = INT8_BOUND * _logit_range(ckpt)
    onnx_diff = meta["checks"]["int8_max_abs_logit_diff"]
    assert 0 < onnx_diff <= bound
    assert check_onnx(tmp_path / "onnx", ckpt, steps=50, rows=5, int8=True) <= bound
    sizes = [(tmp_path / "onnx" / name).stat().st_size for name in ("model.int8.onnx", "model.onnx")]
    assert sizes[0] < 0.5 * sizes[1]  # recurrent and output weights in 8 bits

    model = load_checkpoint(ckpt).model
    q = quantize_model(model)
    float_matrices = [k for k, v in q.state_dict().items() if torch.is_tensor(v) and v.is_floating_point() and v.ndim]
    assert float_matrices == (["embedding.weight"] if emb else [])  # recurrent and output weights are int8
    tokens = torch.randint(0, len(VOCAB), (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, ref_state = model(tokens)
        got, got_state = q(tokens)
        step_logits, state = [], q.begin_state(3)
        for t in range(tokens.shape[1]):  # one token at a time, state fed back
            logits, state = q.step(tokens[:, t], state)
            step_logits.append(logits)
    assert got.shape == ref.shape and all(a.shape == b.shape for a, b in zip(got_state, ref_state))
    torch_diff = float((got - ref).abs().max())
    step_diff = float((torch.stack(step_logits, 1) - ref).abs().max())
    print(f"{cell} E={emb} L={layers}: logit range {bound / INT8_BOUND:.2f}, int8 max |diff| onnx {onnx_diff:.4f} "
          f"torch {torch_diff:.4f} torch-step {step_diff:.4f}, onnx bytes int8/float {sizes[0] / sizes[1]:.2f}")
    assert 0 < torch_diff <= bound and step_diff <= bound


@pytest.mark.parametrize("emb", [0, 8])
def test_unrolled_model_exports(tmp_path, emb):
    ckpt = _checkpoint(tmp_path, "unrolled", emb, 1, window=4)
    meta = export_onnx(ckpt, tmp_path / "onnx", int8=True)
    assert [i["name"] for i in meta["inputs"]] == ["ids", "prev"] and meta["state"][0]["initial"] == -1
    assert meta["inputs"][1] == {"name": "prev", "shape": [1, "N", 3], "dtype": "int64"}
    assert check_onnx(tmp_path / "onnx", ckpt, steps=200, rows=5) <= 1e-4
    scale = _logit_range(ckpt)
    assert meta["checks"]["int8_max_abs_logit_diff"] <= INT8_BOUND * scale
    model = load_checkpoint(ckpt).model
    tokens = torch.randint(0, len(VOCAB), (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (quantize_model(model)(tokens)[0] - model(tokens)[0]).abs().max() <= INT8_BOUND * scale


def test_load_quantized_checkpoint(tmp_path):
    ck = load_quantized(_checkpoint(tmp_path, "gru", 8, 1))
    assert ck.model.describe() == "int8 gru" and ck.vocab == VOCAB
    logits, state = ck.model(torch.tensor([[1, 2, 3]]), ck.model.begin_state(1))
    assert logits.shape == (1, 3, len(VOCAB)) and state[0].shape == (1, 1, 24)


def _main(capsys, *args) -> tuple[int, str, str]:
    """``rnnlab ARGS`` in this process (the CLI's parsing, command and one-line errors): (code, stdout, stderr)."""
    from rnnlab.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_int8_keeps_what_the_model_learnt_and_refuses_what_it_cannot_do(capsys):
    """(Export and --int8 run for every cell in tests/test_every_cell.py.) An int8 copy of a model
    that knows its sentences still completes them; what an int8 copy cannot do is a usage error."""
    from fastapi.testclient import TestClient

    from rnnlab.config import ServeConfig
    from rnnlab.serve import create_app
    from tiny_keyboard_model import tiny_checkpoint

    ckpt = tiny_checkpoint()
    code, out, err = _main(capsys, "suggest", ckpt, "the time trav", "--int8", "--json")
    assert code == 0 and json.loads(out)["completions"][0]["word"] == "traveller", err
    with TestClient(create_app(load_quantized(ckpt), ServeConfig(suggest_worker="thread"))) as c:
        assert c.post("/v1/suggest", json={"text": "the time trav", "k": 3}).json()["completions"][0]["word"] == "traveller"
    code, _, err = _main(capsys, "eval", ckpt, Path(ckpt).parent / "corpus.txt", "--int8", "--dynamic")
    assert code == 2 and "int8" in err
    code, _, err = _main(capsys, "generate", ckpt, "--int8", "--device", "cuda")
    assert code == 2 and ("--int8 runs on the CPU" in err or "CUDA is not available" in err)


def _left(root: Path) -> list[str]:
    """Every path under ``root``, hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_an_export_that_fails_leaves_nothing_and_says_one_line(tmp_path, capsys, monkeypatch):
    import rnnlab.export as export

    ckpt = _checkpoint(tmp_path, "gru", 8, 1)
    before = _left(tmp_path)
    # no checkpoint there: nothing is created (not even DIR/onnx), exit 1
    (tmp_path / "empty").mkdir()
    for missing in (tmp_path / "nope", tmp_path / "empty"):
        code, out, err = _main(capsys, "export", missing)
        assert code == 1 and err.count("\n") == 1 and err.startswith("rnnlab: error:") and out == ""
    assert _left(tmp_path) == sorted([*before, "empty"])
    # the check fails (onnxruntime disagrees with PyTorch): no new folder, parents made for it removed
    monkeypatch.setattr(export, "check_onnx", lambda *a, **k: 1.0)
    code, _, err = _main(capsys, "export", ckpt, "--out", tmp_path / "new" / "deep" / "onnx")
    assert code == 1 and "disagree" in err and err.count("\n") == 1
    assert _left(tmp_path) == sorted([*before, "empty"])
    monkeypatch.undo()
    # an earlier export survives a failed one whole; a good one replaces it (no stale int8 file)
    out = tmp_path / "onnx"
    assert _main(capsys, "export", ckpt, "--int8", "--out", out)[0] == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    for failure in (RuntimeError("boom"), KeyboardInterrupt()):
        def fail(*a, failure=failure, **k):
            raise failure
        monkeypatch.setattr(export, "_quantize_graph", fail)
        code, _, err = _main(capsys, "export", ckpt, "--int8", "--out", out)
        assert (code, err.count("\n")) == ((1, 1) if isinstance(failure, RuntimeError) else (130, 1))
        assert {p.name: p.read_bytes() for p in out.iterdir()} == files
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    code, _, err = _main(capsys, "export", ckpt, "--out", out)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx", "vocab.json"]
    # an --out that holds anything else is refused before any work (exit 2), and left alone
    (out / "notes.txt").write_text("mine")
    code, _, err = _main(capsys, "export", ckpt, "--out", out)
    assert code == 2 and "holds other files (notes.txt)" in err and (out / "notes.txt").read_text() == "mine"
    code, _, err = _main(capsys, "export", ckpt, "--out", out / "notes.txt")
    assert code == 2 and "not a folder" in err


def test_an_exporter_error_is_one_line(tmp_path, capsys, monkeypatch):
    ckpt = _checkpoint(tmp_path, "lstm", 0, 1)

    def broken(*a, **k):
        raise RuntimeError("the exporter broke\nwith a long story")
    monkeypatch.setattr(torch.onnx, "export", broken)
    code, _, err = _main(capsys, "export", ckpt)
    assert code == 1 and err == (f"rnnlab: error: exporting {ckpt} (concise lstm) to ONNX failed: RuntimeError: "
                                 f"the exporter broke\n")
    assert not (ckpt / "onnx").exists() and not [p for p in ckpt.iterdir() if p.name.startswith(".onnx")]


def test_without_onnx_the_export_is_one_line_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    ckpt = _checkpoint(tmp_path, "gru", 0, 1)
    code = "import sys; sys.modules['onnx'] = None; from rnnlab.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "export", str(ckpt)], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "pip install 'rnnlab[export]'" in r.stderr
    assert not (ckpt / "onnx").exists()


def test_a_graph_that_loses_its_state_is_refused(tmp_path, monkeypatch):
    """The bug this guards: a minGRU traced through its C++ scan, whose graph drops the state ``h``."""
    from rnnlab.errors import RnnlabError
    from rnnlab.models import native
    from rnnlab.models.cells import get_cell

    if not native.available():
        pytest.skip("the C++ loops are not built here")
    ckpt = _checkpoint(tmp_path, "mingru", 16, 1, impl="fast", hidden_size=16)
    monkeypatch.setattr(type(get_cell("mingru")), "onnx_graph", property(lambda self: "fast"))
    with pytest.raises(RnnlabError, match=r"lost its input\(s\) h \(an operation"):
        export_onnx(ckpt, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
