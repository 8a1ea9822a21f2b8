"""Three disjoint ranges: training, a selection slice that chooses the weights, and the test split
that is reported and never used for a decision (nor scored before the end)."""
from guards import HANG_GUARD
import json
import subprocess
import sys

import pytest
import torch

import rnnlab.pipeline as pipeline
import rnnlab.evalpoints as evalpoints
from rnnlab import DataConfig, ModelConfig, RunConfig, TrainConfig, train_run
from rnnlab.data import prepare_data, split_points, split_stream

TEXT = "".join(f"line {i} of a small text with some words in it.\n" for i in range(400))


@pytest.mark.parametrize("n,val,sel", [(1000, 0.1, 0.05), (17, 0.2, 0.2), (5000, 0.05, 0.0), (100, 0.0, 0.0)])
def test_the_ranges_are_disjoint_in_order_and_cover_the_stream(n, val, sel):
    s, b = split_points(n, val, sel)
    assert 0 <= s <= b <= n and n - b == int(n * val) and s == int(n * sel)
    ids = torch.arange(n)
    train, select, test = split_stream(ids, val, sel)
    parts = [p for p in (select, train, test) if p is not None]
    assert torch.equal(torch.cat(parts), ids)


def test_the_test_split_is_the_last_val_fraction_whatever_the_selection_slice(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    plain = prepare_data(DataConfig(path=str(tmp_path / "t.txt"), val_fraction=0.1))
    both = prepare_data(DataConfig(path=str(tmp_path / "t.txt"), val_fraction=0.1, select_fraction=0.05))
    assert torch.equal(plain.val_ids, both.val_ids)
    assert len(both.select_ids) == int(len(TEXT) * 0.05)
    assert torch.equal(torch.cat([both.select_ids, both.train_ids]), plain.train_ids)
    assert both.ranges == {"select": [0, len(both.select_ids)], "train": [len(both.select_ids), len(plain.train_ids)],
                           "test": [len(plain.train_ids), len(TEXT)]}


def test_no_decision_sees_the_test_split(tmp_path, monkeypatch):
    """Every evaluation during training scores the selection slice; the test split is scored once,
    after training, by the pipeline. (Passing the test split to the trainer fails this test.)"""
    (tmp_path / "t.txt").write_text(TEXT)
    data = prepare_data(DataConfig(path=str(tmp_path / "t.txt"), val_fraction=0.1, select_fraction=0.05))
    during, after = [], []
    real = evalpoints.evaluate
    monkeypatch.setattr(evalpoints, "evaluate", lambda m, ids, *a, **k: (during.append(ids.clone()), real(m, ids, *a, **k))[1])
    monkeypatch.setattr(pipeline, "evaluate", lambda m, ids, *a, **k: (after.append(ids.clone()), real(m, ids, *a, **k))[1])
    result = train_run(DataConfig(path=str(tmp_path / "t.txt"), val_fraction=0.1),
                       ModelConfig(model="gru", hidden_size=16, embedding_dim=8),
                       TrainConfig(batch_size=4, num_steps=16, seed=3),
                       RunConfig(recipe="default", epochs=3, predict_every=0), out_dir=tmp_path / "run", log=lambda m: None)
    assert during and all(torch.equal(ids, data.select_ids[:len(ids)]) for ids in during)
    assert len(after) == 1 and torch.equal(after[0], data.val_ids)
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["data"]["select_fraction"] == 0.05 and info["data"]["val_fraction"] == 0.1
    assert "select_loss" in result.history[0] and "val_loss" not in result.history[0]
    assert "val_loss" in result.info


def test_choosing_weights_without_a_selection_slice_is_refused(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(tmp_path / "t.txt"), "--recipe", "book",
                        "--val-fraction", "0.1", "--patience", "2", "--epochs", "2", "--hidden-size", "8",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 2 and "--select-fraction" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_book_run_with_a_test_split_scores_it_for_the_record_and_keeps_no_best_weights(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(tmp_path / "t.txt"), "--recipe", "book",
                        "--val-fraction", "0.1", "--epochs", "2", "--hidden-size", "8", "--batch-size", "4",
                        "--num-steps", "8", "--predict-every", "0", "--out", str(tmp_path / "run"), "--quiet"],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    assert "val ppl" in r.stdout and not (tmp_path / "run" / "best").exists()


def test_resume_refuses_a_run_whose_text_splits_otherwise(tmp_path):
    """A run split by an older rnnlab (selection slice just before the test split), or resumed with
    other fractions, would train on its own selection slice: refused with one line."""
    from rnnlab.errors import UsageError
    from rnnlab.runs import check_ranges

    (tmp_path / "t.txt").write_text(TEXT)
    args = (DataConfig(path=str(tmp_path / "t.txt"), val_fraction=0.1, select_fraction=0.05),
            ModelConfig(model="gru", hidden_size=8, embedding_dim=8), TrainConfig(batch_size=4, num_steps=8),
            RunConfig(recipe="book", epochs=1, predict_every=0))
    train_run(*args, out_dir=tmp_path / "run", log=lambda m: None)
    ranges = json.loads((tmp_path / "run" / "config.json").read_text())["info"]["ranges"]
    check_ranges(tmp_path / "run", ranges)  # the same split: fine
    s, b = ranges["select"][1], ranges["test"][0]
    for cfg_path in (tmp_path / "run").rglob("config.json"):  # the run and its snapshots, as the old layout
        cfg = json.loads(cfg_path.read_text())
        cfg["info"]["ranges"] = {"train": [0, b - s], "select": [b - s, b], "test": [b, ranges["test"][1]]}
        cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="split its text as"):
        check_ranges(tmp_path / "run", ranges)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "train", str(tmp_path / "t.txt"), "--recipe", "book",
                        "--val-fraction", "0.1", "--select-fraction", "0.05", "--out", str(tmp_path / "run"),
                        "--resume", "--epochs", "2"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 2 and "split its text as" in r.stderr and r.stderr.count("\n") == 1, r.stderr
