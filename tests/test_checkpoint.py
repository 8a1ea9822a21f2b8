import json

import pytest
import torch

from rnnlab.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.config import DataConfig, ModelConfig, TrainConfig
from rnnlab.data import Tokenizer
from rnnlab.data.vocab import Vocab
from rnnlab.errors import RnnlabError
from rnnlab.models import build_model


def _saved(tmp_path, **kw):
    vocab = Vocab.build(list("hello world"))
    cfg = ModelConfig(model="lstm", vocab_size=len(vocab), hidden_size=8, num_layers=2, **kw)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(tmp_path / "ck", model, Tokenizer(vocab), cfg, DataConfig(dataset="timemachine"), TrainConfig(lr=0.5),
                    info={"epoch": 3})
    return model, vocab, tmp_path / "ck"


def test_round_trip_restores_weights_vocab_and_configs(tmp_path):
    model, vocab, d = _saved(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    ck = load_checkpoint(d)
    assert ck.vocab == vocab and ck.train_config.lr == 0.5 and ck.info["epoch"] == 3
    assert ck.model_config.model == "lstm" and ck.data_config.dataset == "timemachine"
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model.state_dict()[k], v)
    x = torch.tensor([[1, 2, 3]])
    assert torch.equal(ck.model(x)[0], model.eval()(x)[0])


def test_weights_are_safetensors_not_pickle(tmp_path):
    _, _, d = _saved(tmp_path)
    head = (d / "model.safetensors").read_bytes()[:16]
    assert not head.startswith(b"\x80")  # a pickle starts with the PROTO opcode
    n = int.from_bytes(head[:8], "little")
    meta = json.loads((d / "model.safetensors").read_bytes()[8:8 + n])
    assert "rnn.weight_ih_l0" in meta


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]), "corrupt or truncated"),
    (lambda d: (d / "vocab.json").write_text(json.dumps({"tokens": ["<unk>", "a"], "unk": "<unk>"})), "vocab.json has 2"),
])
def test_damaged_checkpoints_give_clear_errors(tmp_path, damage, fragment):
    _, _, d = _saved(tmp_path)
    damage(d)
    with pytest.raises(RnnlabError, match=fragment):
        load_checkpoint(d)


def test_missing_directory(tmp_path):
    with pytest.raises(RnnlabError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "nope")


def test_a_model_trained_with_dropconnect_loads_into_any_impl(tmp_path):
    """DropConnect (--weight-drop) exists only in the fast kernels and only in training: the
    checkpoint still loads as concise or scratch (export, the book's code), with equal outputs."""
    model, _, d = _saved(tmp_path, impl="fast", embedding_dim=4, weight_drop=0.3)
    x = torch.tensor([[1, 2, 3, 4]])
    want = model.eval()(x)[0]
    for impl in ("concise", "scratch"):
        ck = load_checkpoint(d, impl=impl)
        assert ck.model_config.impl == impl and ck.model_config.weight_drop == 0.0
        assert torch.allclose(ck.model(x)[0], want, atol=1e-5)
    assert load_checkpoint(d).model_config.weight_drop == 0.3  # as trained
