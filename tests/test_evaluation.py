"""Held-out evaluation: static (every token once, in order) and dynamic (the model adapts as it reads)."""
from guards import HANG_GUARD
import hashlib
import json
import subprocess
import sys

import pytest
import torch

from rnnlab.checkpoint import load_checkpoint
from rnnlab.adaptation import dynamic_evaluate
from rnnlab.evaluation import evaluate
from tiny_keyboard_model import tiny_checkpoint

REPEATED = "we sat in the machine and talked about the garden. " * 12  # a text of its own, said again and again


def _sha(d):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_dynamic_evaluation_adapts_to_a_repetitive_text_and_changes_nothing():
    ck = load_checkpoint(tiny_checkpoint())
    ids = torch.tensor(ck.vocab.encode(list(REPEATED)))
    before = {k: v.clone() for k, v in ck.model.state_dict().items()}
    static = evaluate(ck.model, ids, 1, 20)
    for method, lr in (("rms", 2e-4), ("sgd", 0.3)):
        stats = torch.tensor(ck.vocab.encode(list(open(ck.data_config.path).read()))) if method == "rms" else None
        dyn = dynamic_evaluate(ck.model, ids, lr=lr, chunk=20, method=method, stats_ids=stats)
        assert dyn["tokens"] == static["tokens"] == len(ids) - 1
        assert dyn["loss"] < static["loss"] - 0.3, (method, dyn["loss"], static["loss"])
    assert all(torch.equal(before[k], v) for k, v in ck.model.state_dict().items())  # the caller's model untouched
    # lr -> 0 is the static reading of the same layout
    assert dynamic_evaluate(ck.model, ids, lr=1e-12, chunk=20, method="sgd")["loss"] == pytest.approx(static["loss"], abs=1e-5)


def test_eval_dynamic_through_the_cli_leaves_the_checkpoint_on_disk_unchanged(tmp_path):
    ckpt = tiny_checkpoint()
    (tmp_path / "rep.txt").write_text(REPEATED)
    before = _sha(ckpt)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "eval", str(ckpt), str(tmp_path / "rep.txt"), "--dynamic",
                        "--json"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dynamic"]["loss"] < out["static_1row"]["loss"] and out["dynamic"]["method"] == "rms"
    assert _sha(ckpt) == before


def test_dynamic_evaluation_scores_each_chunk_before_it_learns_from_it():
    """A reference written here: chunk k is scored by the weights after steps on chunks 0..k-1
    only. Adapting on a chunk before scoring it (peeking) fails this test."""
    import copy

    from torch.nn import functional as F

    ck = load_checkpoint(tiny_checkpoint())
    ids = torch.tensor(ck.vocab.encode(list(REPEATED)))[:161]
    lr, chunk = 0.5, 20
    m = copy.deepcopy(ck.model)
    m.eval()
    params = [p for p in m.parameters() if p.requires_grad]
    state, per_chunk = m.begin_state(1, m.device), []
    for i in range(0, len(ids) - 1, chunk):
        x, y = ids[i:min(i + chunk, len(ids) - 1)][None], ids[i + 1:min(i + chunk, len(ids) - 1) + 1][None]  # (1, <=chunk)
        logits, state = m(x, tuple(s.detach() for s in state))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        per_chunk.append((loss.item(), y.numel()))
        with torch.no_grad():
            for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    p -= lr * g
    want = sum(l * n for l, n in per_chunk) / sum(n for _, n in per_chunk)
    got = dynamic_evaluate(ck.model, ids, lr=lr, chunk=chunk, method="sgd")
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    # the first chunk is scored by the unadapted model: its loss is the static model's on it
    first = dynamic_evaluate(ck.model, ids[:chunk + 1], lr=lr, chunk=chunk, method="sgd")
    assert first["loss"] == pytest.approx(evaluate(ck.model, ids[:chunk + 1], 1, chunk)["loss"], rel=1e-6)
