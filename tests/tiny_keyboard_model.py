"""A tiny character LSTM that has learnt a few sentences by heart, trained once per test session
and shared by the suggestion, server and browser tests."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

SENTENCES = [
    "the time traveller smiled at us.",
    "the time machine stood in the laboratory.",
    "the psychologist looked at the machine.",
    "we sat in the garden and talked about time.",
    "the traveller came back at dinner time.",
]
CORPUS = "\n".join(SENTENCES * 6) + "\n"
WORDS = frozenset(CORPUS.replace(".", " ").split())


@functools.lru_cache(maxsize=None)
def tiny_checkpoint(preset: str = "raw", token: str = "char") -> Path:
    """Train (once) and return the checkpoint directory of a small LSTM on ``CORPUS``."""
    import torch

    from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from rnnlab.pipeline import train_run

    root = Path(tempfile.mkdtemp(prefix="rnnlab-keyboard-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    out = root / f"ckpt-{preset}-{token}"
    dcfg = DataConfig(path=str(root / "corpus.txt"), preset=preset, token=token)
    mcfg = ModelConfig(model="lstm", hidden_size=64, embedding_dim=16 if token == "word" else 0)
    tcfg = TrainConfig(batch_size=8, num_steps=16 if token == "char" else 4, lr=4.0, seed=0)
    rcfg = RunConfig(recipe="book", epochs=60, device="cpu", predict_every=0, log_every=1000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster and leaves the other core free
    try:
        train_run(dcfg, mcfg, tcfg, rcfg, out, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return out


# A corpus whose three ranges each hold words of their own: training (the sentences above), the
# selection slice ("quagmire") and the test split ("zeppelin"), for the tests that the keyboard's
# word model, its tuning and its baselines never read what they must not.
SELECT_PART = "we sat in the quagmire and talked about the machine.\n" * 4
TEST_PART = "the zeppelin traveller smiled at the zeppelin machine.\n" * 4
SPLIT_CORPUS = SELECT_PART + CORPUS + TEST_PART


@functools.lru_cache(maxsize=None)
def split_checkpoint() -> Path:
    """Train (once) a small LSTM on ``SPLIT_CORPUS`` with its selection slice set to the first part
    and its test split to the last (``rnnlab.data.split_points``); returns the run directory."""
    import torch

    from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from rnnlab.pipeline import train_run

    root = Path(tempfile.mkdtemp(prefix="rnnlab-keyboard-split-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "corpus.txt").write_text(SPLIT_CORPUS, encoding="utf-8")
    n = len(SPLIT_CORPUS)
    # each range takes a few characters more than its part, so that each sentinel word lies inside its own range
    dcfg = DataConfig(path=str(root / "corpus.txt"), val_fraction=(len(TEST_PART) + 5) / n,
                      select_fraction=(len(SELECT_PART) + 5) / n)
    mcfg = ModelConfig(model="lstm", hidden_size=64)
    tcfg = TrainConfig(batch_size=8, num_steps=16, lr=4.0, seed=0)
    rcfg = RunConfig(recipe="book", epochs=40, device="cpu", predict_every=0, log_every=1000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_run(dcfg, mcfg, tcfg, rcfg, root / "run", log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return root / "run"
