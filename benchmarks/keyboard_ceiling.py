"""How far can mixing take the keyboard? Keystroke savings of the character model alone, the fair
n-gram keyboard, the served mix, and a mix fitted on the reported text itself (an upper bound).

For each checkpoint, the simulated user of ``rnnlab eval --keyboard`` types the run's selection
slice (its word model built from the training split, as ``rnnlab words`` tunes) and the first
``--words`` words of its test split, every candidate of every position recorded with its features
(``rnnlab.keyboard.tune.record``: exact character-model log-prob, n-gram probability, recent-word
count, lexicon membership). Then, on the test split, without the model:

* ``char model``: candidates ranked by the character model's probability alone;
* ``fair n-gram``: the n-gram keyboard's settings tuned on the selection slice (``tune.tune``);
* ``served``: the served search's settings tuned on the selection slice (what ``rnnlab serve`` does);
* ``fitted mix``: a log-linear mix of every feature (the three log-probabilities, the served mix's
  own score, out-of-lexicon, per characters typed 0/1/2/3+) fitted *on the test split itself*
  (softmax of the typed word among its candidates, L-BFGS): no served keyboard can know these
  weights, so it bounds what any mixing of these features reaches. Where it stays below a target,
  the character model, not the mixing, is what must improve.

    RNNLAB_DATA_DIR=../shared/data python benchmarks/keyboard_ceiling.py runs/budget/tinyshakespeare-300
    python benchmarks/keyboard_ceiling.py runs/a runs/b --words 3000 --tune-words 3000

Trains nothing; one thread (the one-step matrices are small).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rnnlab.checkpoint import load_checkpoint
from rnnlab.config import SuggestConfig, WordsConfig
from rnnlab.data.text_data import split_points
from rnnlab.keyboard.tune import Table, keystrokes, mixed_scores, model_text, record, target_ranks, tune, tuning_texts
from rnnlab.suggest import MixParams, SuggestEngine, WordModel, Words

KS = (1, 3, 5)
FLOOR = -25.0  # the log-feature of a candidate a source did not propose


def savings(t: Table, scores: np.ndarray) -> dict:
    """KSR at each k and next-word top-1 when every position's candidates are ranked by ``scores``
    (Q, C) (-inf: not shown), by ``tune``'s rule (ties by spelling, as served)."""
    keys = keystrokes(t, None, KS, scores=scores)
    out = {f"ksr@{k}": 1 - keys[k] / t.characters for k in KS}
    rank, shown = target_ranks(t, scores)
    start = t.typed == 0
    out["next_word_top1"] = float((shown & (rank < 1))[start].sum() / start.sum())
    return out


def features(t: Table, served: MixParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, C, F) log-features with their was-missing flags, and (Q,) the group (characters typed, 0..3)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = [t.lp_nn - np.log(t.nn_norm), np.log(t.p_ng / (t.ng_mass + 1e-300)),
                np.log(t.count / (t.n_cache + (t.n_cache == 0))), np.log(np.maximum(mixed_scores(t, served), 0))]
    cols = []
    for f in logs:
        known = np.isfinite(f)
        cols += [np.where(known, f, FLOOR), (~known).astype(np.float64)]
    cols.append(t.in_lex)
    return torch.tensor(np.stack(cols, -1)), torch.tensor(np.minimum(t.typed, 3))


def fitted(t: Table, served: MixParams) -> np.ndarray:
    """Scores of the log-linear mix fitted on ``t`` itself (the module docstring)."""
    x, group = features(t, served)
    valid = torch.tensor(t.valid)
    target = torch.tensor(t.target & t.valid)
    has = target.any(1)
    w = torch.zeros(4, x.shape[-1], dtype=torch.float64)
    w[:, 6] = 1.0  # start from the served mix
    w.requires_grad_(True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        s = (x * w[group][:, None, :]).sum(-1).masked_fill(~valid, -1e9)  # (Q, C)
        value = (torch.logsumexp(s, 1) - s.masked_fill(~target, -1e9).max(1).values)[has].mean()
        value.backward()
        return value

    opt.step(loss)
    with torch.no_grad():
        return (x * w[group][:, None, :]).sum(-1).masked_fill(~valid, -np.inf).numpy()


def measure(run: str, words: int, tune_words: int) -> dict:
    ck = load_checkpoint(run)
    ck.model.eval()
    cfg = ck.data_config
    text = model_text(cfg)
    texts = tuning_texts(text, cfg)
    _, b = split_points(len(text), cfg.val_fraction, cfg.select_fraction)
    tables = {}
    for name, typed, history, ngram, n in (
            ("select", texts["tune"], texts["history"], texts["ngram"], tune_words),
            ("test", text[b:], text[:b], texts["final"] or texts["ngram"], words)):
        engine = SuggestEngine(ck.model, ck.tokenizer, SuggestConfig(), words=Words(WordModel.from_text(ngram)))
        try:
            tables[name] = record(engine, typed, history, n, 1e9)[0]
        finally:
            engine.close()
    served, baseline, _ = tune(tables["select"])
    test = tables["test"]
    char_only = np.where(np.isfinite(test.lp_nn), test.lp_nn - np.log(test.nn_norm), -np.inf)
    rows = {"char model": savings(test, char_only), "fair n-gram": savings(test, mixed_scores(test, baseline)),
            "served": savings(test, mixed_scores(test, served)),
            "fitted mix (on the test text)": savings(test, fitted(test, served))}
    return {"run": run, "test_words": int(len(test.lengths)), "tuning_words": int(len(tables["select"].lengths)),
            "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--words", type=int, default=3000, help="test words typed (as rnnlab eval --keyboard)")
    p.add_argument("--tune-words", type=int, default=WordsConfig().tune_words, help="selection-slice words typed")
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(1)
    reports = []
    for run in a.checkpoints:
        r = measure(run, a.words, a.tune_words)
        reports.append(r)
        base = r["rows"]["fair n-gram"]
        print(f"\n{run}: {r['test_words']:,} test words (settings tuned on {r['tuning_words']:,} selection words)")
        print("| keyboard | KSR@1 | KSR@3 | KSR@5 | next-word top-1 | KSR@3 / fair n-gram | top-1 / fair n-gram |")
        print("|---|---|---|---|---|---|---|")
        for name, row in r["rows"].items():
            print(f"| {name} | " + " | ".join(f"{row[f'ksr@{k}']:.4f}" for k in KS) + f" | {row['next_word_top1']:.4f} | "
                  f"{row['ksr@3'] / base['ksr@3']:.3f} | {row['next_word_top1'] / base['next_word_top1']:.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    from machine import describe  # benchmarks/machine.py: CPU, flags, GEMM rate

    print(describe(), flush=True)
    main()
