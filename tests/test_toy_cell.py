"""A cell is one module: a toy cell written and registered in this file alone (nothing else in
rnnlab edited) trains, generates, suggests, resumes, is served and exported; a second one brings its
own stack and cost per token, and the default recipe sizes it by that cost — and the registry
refuses what a cell does not have instead of running another cell's code."""
import json

import pytest
import torch
from torch import nn

from rnnlab import recipes

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


class DiagonalStack(nn.Module):
    """The diagonal cell's own stack: per layer ``h_t = tanh(x_t W^T + b + d * h_{t-1})``, a
    recurrence through a diagonal ``d`` (H weights, not H x H). x (T, B, I), state (h,) each
    (L, B, H) -> (T, B, H), state; step: x (N, I) -> (N, H), state."""

    def __init__(self, input_size, cfg):
        super().__init__()
        H = cfg.hidden_size
        self.inputs = nn.ModuleList(nn.Linear(input_size if k == 0 else H, H) for k in range(cfg.num_layers))
        self.decay = nn.Parameter(torch.full((cfg.num_layers, H), 0.5))

    def forward(self, x, state):
        last = []
        for k, layer in enumerate(self.inputs):
            xw, h, out = layer(x), state[0][k], []  # xw (T, B, H): one product over all T*B rows
            for t in range(x.shape[0]):
                h = torch.tanh(xw[t] + self.decay[k] * h)
                out.append(h)
            x = torch.stack(out)  # (T, B, H)
            last.append(h)
        return x, (torch.stack(last),)  # (L, B, H)

    def step(self, x, state):
        out, state = self(x[None], state)  # (1, N, H)
        return out[0], state


@register
class DiagonalCell(Cell):
    name = "diagonal"
    impls = ("scratch",)
    recurrent_weight = None

    def make_stack(self, impl, input_size, cfg):
        return DiagonalStack(input_size, cfg)

    def flops_per_token(self, input_size, cfg):
        """Each layer's input product (2 I H) and its diagonal recurrence and tanh (counted as 3 H)."""
        H = cfg.hidden_size
        return sum(2 * (input_size if k == 0 else H) * H + 3 * H for k in range(cfg.num_layers))


def test_a_cell_with_its_own_stack_and_cost_is_sized_by_the_default_recipe_and_trains(tmp_path):
    """Adding a cell is one module and one test: the diagonal cell above (its stack, its cost) is
    sized by the default recipe from its own cost at a fixed measured speed, trains and generates."""
    cfg = ModelConfig(model="diagonal", impl="scratch", vocab_size=30, hidden_size=8, embedding_dim=4, num_layers=2)
    cell = get_cell("diagonal")
    assert cell.parameter_count(4, cfg) == (4 * 8 + 8) + (8 * 8 + 8) + 2 * 8  # two Linear layers and d
    assert cfg.parameter_count() == 30 * 4 + cell.parameter_count(4, cfg) + (8 * 30 + 30)  # embedding, stack, head
    assert cfg.flops_per_token() == (2 * 4 * 8 + 3 * 8) + (2 * 8 * 8 + 3 * 8) + 2 * 8 * 30  # the cell's, the head's

    flops_per_s = 1e9  # a machine measured once: the training step costs three forward passes

    def rate_of(cand):
        return flops_per_s / (3 * cand.flops_per_token()), cand.parameter_count()

    m, t, r = ModelConfig(model="diagonal", impl="scratch"), TrainConfig(), RunConfig(recipe="default", budget=120.0)
    plan = recipes.resolve("default", m, t, r, {"model", "impl", "budget"}, 200_000, 30, rate_of=rate_of)
    width = plan.values["hidden_size"]
    assert width in recipes.WIDTHS and m.hidden_size == width and m.embedding_dim == recipes.EMBEDDING

    def fits(w):  # the size rule by hand: >= 8 tokens per parameter at this width's own rate
        cand = recipes.candidate(m, w)
        rate, n = rate_of(cand)
        return recipes.tokens_seen(rate, 120.0, 0, 200_000) >= recipes.TOKENS_PER_PARAMETER * n
    assert fits(width) and not fits(recipes.WIDTHS[recipes.WIDTHS.index(width) + 1])
    slower = recipes.resolve("default", ModelConfig(model="diagonal", impl="scratch"), TrainConfig(),
                             RunConfig(recipe="default", budget=120.0), {"model", "impl", "budget"}, 200_000, 30,
                             rate_of=lambda cand: (rate_of(cand)[0] / 8, cand.parameter_count()))
    assert slower.values["hidden_size"] < width  # the same cell at an eighth of the speed: a smaller model

    src = tmp_path / "t.txt"
    src.write_text(TEXT)
    small = ModelConfig(model="diagonal", impl="scratch", hidden_size=16, embedding_dim=8)
    run = train_run(DataConfig(path=str(src)), small, TrainConfig(batch_size=4, num_steps=12, optimizer="adam",
                                                                  lr=0.02, seed=1),
                    RunConfig(recipe="book", epochs=3, predict_every=0), tmp_path / "run", log=lambda msg: None)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    ck = load_checkpoint(tmp_path / "run")
    assert isinstance(ck.model.rnn, DiagonalStack)
    text = generate_text(ck.model, ck.tokenizer, "the le", GenerateConfig(length=12))[0]
    assert text.startswith("the le") and len(text) == len("the le") + 12


def _configs(path, epochs):
    return (DataConfig(path=str(path), val_fraction=0.1),
            ModelConfig(model="leaky", impl="scratch", hidden_size=16, embedding_dim=8),
            TrainConfig(batch_size=4, num_steps=12, optimizer="adam", lr=0.02, seed=1),
            RunConfig(recipe="book", epochs=epochs, predict_every=0, save_every=1))


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
    from shipped import shipped_cells

    root = Path(rnnlab.__file__).parent
    ours = shipped_cells()  # not this file's toys
    assert {"rnn", "gru", "lstm", "mingru", "minlstm"} <= set(ours)
    pattern = re.compile(r"""["'](%s)["']""" % "|".join(ours))
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if "models" not in p.relative_to(root).parts
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
