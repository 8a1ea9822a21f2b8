"""A cell is one module: a toy cell written and registered in this file alone (nothing else in
rnnlab edited) trains, generates, suggests, resumes, is served and exported — and the registry refuses what
a cell does not have instead of running another cell's code."""
import json

import pytest
import torch

from rnnlab.checkpoint import load_checkpoint
from rnnlab.config import DataConfig, GenerateConfig, ModelConfig, RunConfig, ServeConfig, TrainConfig
from rnnlab.decoding import generate_text
from rnnlab.errors import UsageError
from rnnlab.models import build_model, model_names
from rnnlab.models.cells import Cell, cell_names, get_cell, register
from rnnlab.pipeline import stored_configs, train_run
from rnnlab.suggest import SuggestEngine


@register
class LeakyCell(Cell):
    """A leaky RNN: h' = (1 - a) h + a tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), a = 1/2."""

    name = "leaky"
    gates = 1
    impls = ("scratch",)

    def step(self, x, state, params, cfg):
        (h,), (w_ih, w_hh, b_ih, b_hh) = state, params
        return (0.5 * h + 0.5 * torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh),)


TEXT = "the leaky cell remembers half of what it saw. " * 40


def _configs(path, epochs):
    return (DataConfig(path=str(path), val_fraction=0.1),
            ModelConfig(model="leaky", impl="scratch", hidden_size=16, embedding_dim=8),
            TrainConfig(batch_size=4, num_steps=12, optimizer="adam", lr=0.02, seed=1),
            RunConfig(epochs=epochs, predict_every=0, save_every=1))


def test_a_cell_registered_in_a_test_trains_generates_suggests_resumes_and_serves(tmp_path):
    assert "leaky" in cell_names() and "leaky" in model_names()
    src = tmp_path / "t.txt"
    src.write_text(TEXT)
    quiet = lambda msg: None  # noqa: E731
    # train (4 epochs, uninterrupted) and the same run stopped after 2 epochs then resumed to 4
    full = train_run(*_configs(src, 4), tmp_path / "full", log=quiet)
    assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]
    train_run(*_configs(src, 2), tmp_path / "part", log=quiet)
    d, m, t, r = stored_configs(tmp_path / "part")
    resumed = train_run(d, m, t, r.replace(epochs=4), tmp_path / "part", log=quiet, resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]

    ck = load_checkpoint(tmp_path / "full")
    assert ck.model_config.model == "leaky" and ck.model.cell.name == "leaky"
    # generate: the one decoder over the cell's reference step equals stepping forward by hand
    text = generate_text(ck.model, ck.tokenizer, "the le", GenerateConfig(length=20))[0]
    ids = ck.vocab.encode(list("the le"))
    with torch.no_grad():
        logits, state = ck.model(torch.tensor([ids]), ck.model.begin_state(1))
        by_hand = []
        for _ in range(20):
            nxt = int(logits[0, -1].masked_fill(torch.arange(len(ck.vocab)) == ck.vocab.unk_id, -1e9).argmax())
            by_hand.append(nxt)
            logits, state = ck.model(torch.tensor([[nxt]]), state)
    assert text == "the le" + ck.tokenizer.decode(by_hand)
    # suggest
    engine = SuggestEngine(ck.model, ck.tokenizer)
    s = engine.suggest("the leaky ce", k=3)
    assert s.mode == "complete" and s.completions and len(s.next_chars) == 3
    engine.close()
    # serve
    from fastapi.testclient import TestClient

    from rnnlab.serve import create_app

    with TestClient(create_app(tmp_path / "full", ServeConfig(suggest_worker="thread"))) as c:
        assert c.get("/healthz").json()["model"]["model"] == "leaky"
        assert c.post("/v1/suggest", json={"text": "the leaky ce", "k": 3}).json()["completions"]
        lines = [json.loads(x) for x in c.post("/v1/generate/stream", json={"prefix": "the ", "length": 8}).text.splitlines()]
        assert lines[-1] == {"done": True, "tokens": 8}
    # export: the traced reference step (the cell has no torch layer), its state in the graph, float32 and int8;
    # int8 in PyTorch is the cell's to offer (``Cell.quantized_layer``), and this one does not
    pytest.importorskip("onnxruntime")
    from rnnlab.export import export_onnx

    meta = export_onnx(tmp_path / "full", tmp_path / "onnx", int8=True, steps=50)
    assert [i["name"] for i in meta["inputs"]] == ["ids", "h"] and meta["checks"]["float32_max_abs_logit_diff"] <= 1e-4
    assert 0 < meta["checks"]["int8_max_abs_logit_diff"] < 1
    with pytest.raises(UsageError, match="int8 is not available for --model leaky"):
        ck.model.quantized()


def test_what_a_cell_does_not_have_fails_loudly():
    for impl in ("concise", "fast"):
        with pytest.raises(UsageError, match=f"--impl {impl} is not available for --model leaky; choose one of: scratch"):
            build_model(ModelConfig(model="leaky", impl=impl, vocab_size=5, hidden_size=4))
    with pytest.raises(UsageError, match="unknown --model 'grue'; choose one of: rnn, gru, lstm"):
        ModelConfig(model="grue").validate()
    with pytest.raises(UsageError, match="unknown cell"):
        get_cell("grue")
    with pytest.raises(UsageError, match="--activation applies to --model rnn only"):
        ModelConfig(model="leaky", impl="scratch", activation="relu").validate()


def test_no_code_outside_models_names_a_cell():
    """The factory and the cell modules are the only places that know the cells by name."""
    import re
    from pathlib import Path

    import rnnlab

    root = Path(rnnlab.__file__).parent
    pattern = re.compile(r"""["'](rnn|gru|lstm)["']""")
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if "models" not in p.relative_to(root).parts
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
