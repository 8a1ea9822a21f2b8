"""Fine-tuning (`rnnlab train FILE --init-from DIR`): the base's weights and vocabulary, characters it
never saw (read as <unk>, or added with --extend-vocab), conflicting flags refused, exact resume."""
from guards import HANG_GUARD
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rnnlab.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.data import Tokenizer, Vocab
from rnnlab.errors import RnnlabError
from rnnlab.models import build_model, grow_vocabulary
from rnnlab.pipeline import stored_configs, train_run

BASE_TEXT = "the time traveller smiled at us and the machine stood still. " * 30
NEW_TEXT = "Zazie dans le métro: zut! the time zone was odd. " * 30  # Z, z, é, :, ! ... are new


def run(*args):
    return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=HANG_GUARD, env=dict(os.environ, PYTHONIOENCODING="utf-8"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    (d / "base.txt").write_text(BASE_TEXT)
    (d / "new.txt").write_text(NEW_TEXT)
    r = run("train", d / "base.txt", "--model", "lstm", "--embedding-dim", "8", "--hidden-size", "32",
            "--batch-size", "4", "--num-steps", "16", "--epochs", "3", "--optimizer", "adam", "--lr", "0.01",
            "--out", d / "base", "--predict-every", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    return d


def test_fine_tuning_keeps_the_base_vocabulary_and_reads_unseen_characters_as_unk(base, tmp_path):
    r = run("train", base / "new.txt", "--init-from", base / "base", "--epochs", "1", "--out", tmp_path / "ft",
            "--batch-size", "4", "--num-steps", "16", "--predict-every", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "fine-tuning" in r.stdout and "read as <unk>" in r.stdout and "'z'" in r.stdout
    ft, b = load_checkpoint(tmp_path / "ft"), load_checkpoint(base / "base")
    assert ft.vocab == b.vocab and ft.model_config.hidden_size == 32 and ft.model_config.model == "lstm"
    assert ft.run_config.init_from == str(base / "base")


def test_fine_tuning_starts_from_the_base_weights(base, tmp_path):
    """With a learning rate too small to move anything, the fine-tuned weights are the base's."""
    r = run("train", base / "base.txt", "--init-from", base / "base", "--epochs", "1", "--out", tmp_path / "ft",
            "--optimizer", "sgd", "--lr", "1e-12", "--batch-size", "4", "--num-steps", "16", "--predict-every", "0",
            "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = load_file(str(tmp_path / "ft" / "model.safetensors")), load_file(str(base / "base" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-9) for k in a)


def test_extend_vocab_adds_new_tokens_that_start_as_unk(base, tmp_path):
    r = run("train", base / "new.txt", "--init-from", base / "base", "--extend-vocab", "--epochs", "2",
            "--out", tmp_path / "ft", "--batch-size", "4", "--num-steps", "16", "--predict-every", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    ft, b = load_checkpoint(tmp_path / "ft"), load_checkpoint(base / "base")
    assert ft.vocab.idx_to_token[:len(b.vocab)] == b.vocab.idx_to_token
    assert {"Z", "z", "é"} <= set(ft.vocab.idx_to_token[len(b.vocab):])
    assert ft.model_config.vocab_size == len(ft.vocab) > len(b.vocab)
    assert not (torch.tensor(ft.vocab.encode(list(NEW_TEXT))) == ft.vocab.unk_id).any()


def test_grow_vocabulary_keeps_old_slices_and_seeds_new_ones_with_unk():
    vocab = Vocab.build(list("abc "))
    for emb in (0, 4):
        cfg = ModelConfig(model="gru", vocab_size=len(vocab), hidden_size=6, embedding_dim=emb)
        torch.manual_seed(0)
        old = build_model(cfg)
        bigger = build_model(ModelConfig(**{**cfg.to_dict(), "vocab_size": len(vocab) + 2}))
        grown = grow_vocabulary(old.state_dict(), bigger, len(vocab), vocab.unk_id)
        bigger.load_state_dict(grown)
        for name, t in old.state_dict().items():
            g = grown[name]
            if g.shape == t.shape:
                assert torch.equal(g, t)
            else:
                d = next(i for i, (x, y) in enumerate(zip(t.shape, g.shape)) if x != y)
                assert torch.equal(g.narrow(d, 0, len(vocab)), t)
                for j in (len(vocab), len(vocab) + 1):
                    assert torch.equal(g.narrow(d, j, 1), t.narrow(d, vocab.unk_id, 1))


def test_a_base_without_unk_needs_extend_vocab(tmp_path):
    vocab = Vocab.build(list(BASE_TEXT), unk=None)
    cfg = ModelConfig(model="rnn", vocab_size=len(vocab), hidden_size=8)
    save_checkpoint(tmp_path / "nounk", build_model(cfg), Tokenizer(vocab), cfg)
    (tmp_path / "new.txt").write_text(NEW_TEXT)
    r = run("train", tmp_path / "new.txt", "--init-from", tmp_path / "nounk", "--out", tmp_path / "o",
            "--epochs", "1", "--quiet")
    assert r.returncode == 1 and "has no <unk>; pass --extend-vocab" in r.stderr and "Traceback" not in r.stderr
    r = run("train", tmp_path / "new.txt", "--init-from", tmp_path / "nounk", "--extend-vocab", "--out",
            tmp_path / "o", "--epochs", "1", "--batch-size", "4", "--num-steps", "16", "--predict-every", "0", "--quiet")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--hidden-size", "64"], "--hidden-size 64 conflicts with the base model's 32"),
    (["--model", "gru"], "--model 'gru' conflicts with the base model's 'lstm'"),
    (["--preset", "letters"], "--preset does not apply with --init-from"),
    (["--min-freq", "3"], "--min-freq does not apply with --init-from"),
])
def test_flags_that_contradict_the_base_are_refused(base, tmp_path, args, fragment):
    r = run("train", base / "new.txt", "--init-from", base / "base", "--out", tmp_path / "o", *args)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run("train", base / "new.txt", "--init-from", tmp_path / "nothing", "--out", tmp_path / "o")
    assert r.returncode == 1 and "no such checkpoint directory" in r.stderr


def test_library_callers_get_the_same_checks(base, tmp_path):
    with pytest.raises(RnnlabError, match="fine-tuning keeps the base's architecture"):
        train_run(DataConfig(path=str(base / "new.txt")), ModelConfig(model="lstm", hidden_size=16),
                  TrainConfig(batch_size=4, num_steps=16), RunConfig(recipe="book", epochs=1, init_from=str(base / "base")),
                  tmp_path / "o", log=lambda m: None)


def test_a_fine_tuned_run_resumes_exactly(base, tmp_path):
    import rnnlab.pipeline as pl

    def configs():
        d, m, _, _ = stored_configs(base / "base")
        return (DataConfig(path=str(base / "new.txt"), preset=d.preset, token=d.token), m,
                TrainConfig(batch_size=4, num_steps=16, optimizer="adam", lr=0.003, seed=2),
                RunConfig(recipe="book", epochs=3, predict_every=0, init_from=str(base / "base"), extend_vocab=True))

    full = train_run(*configs(), tmp_path / "full", log=lambda m: None)
    orig = pl.Trainer

    class Stops(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.step_callbacks.append(lambda t, loss, n: t.request_stop() if t.step == t.batches_per_epoch + 2 else None)

    pl.Trainer = Stops
    try:
        assert train_run(*configs(), tmp_path / "part", log=lambda m: None).interrupted
    finally:
        pl.Trainer = orig
    resumed = train_run(*stored_configs(tmp_path / "part"), tmp_path / "part", log=lambda m: None, resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "part" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "part" / "config.json").read_text())["run"]["extend_vocab"] is True
