"""Confidence intervals for one keyboard's figures over another's, by the bootstrap over words.

Both keyboards typed the same words (``evaluate_keyboard(..., record=True)``). Each word is a unit
with its characters (the separators before it, then its own; the text's trailing separators go to
the last word), its keystrokes at each k (the separators, then its cost) and whether it was the
top-1 next word. A resample draws as many words with replacement, the *same* words for both
keyboards (a paired bootstrap), and recomputes each ratio over the resampled sums, e.g.

    KSR_a / KSR_b = (1 - sum keys_a / sum chars) / (1 - sum keys_b / sum chars)

The interval is the 2.5th to 97.5th percentile of the resampled ratios (the percentile method).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def word_units(result: dict[str, Any]) -> dict[str, Any]:
    """Per word: characters, keystrokes at each k, top-1 next word, from a recorded result."""
    details, seps = result["details"], result["separators_before"]
    ks = sorted(int(k) for k in result["ksr"])
    lengths = np.array([len(w) for w, _, _ in details], dtype=np.float64)
    sep = np.array(seps, dtype=np.float64)
    chars = sep + lengths
    keys = {}
    for k in ks:
        cost = [next((i + 1 for i, r in enumerate(ranks) if r is not None and r < k), len(w)) for w, _, ranks in details]
        keys[k] = sep + np.array(cost, dtype=np.float64)
    if len(chars):
        chars[-1] += result.get("trailing", 0)
        for k in ks:
            keys[k][-1] += result.get("trailing", 0)
    top1 = np.array([ranks[0] == 0 for _, _, ranks in details], dtype=np.float64)
    return {"starts": [s for _, s, _ in details], "chars": chars, "keys": keys, "top1": top1}


def bootstrap_ratios(a: dict[str, Any], b: dict[str, Any], resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """``level`` intervals of ``a``'s keystroke savings (each k) and next-word top-1 over ``b``'s:
    ``{"ksr": {k: [lo, hi]}, "next_word_top1": [lo, hi], "resamples": n}`` (None where a ratio is
    undefined in too many resamples)."""
    ua, ub = word_units(a), word_units(b)
    if ua["starts"] != ub["starts"]:
        raise ValueError("the two keyboards did not type the same words; a paired bootstrap needs the same text")
    n = len(ua["chars"])
    out: dict[str, Any] = {"ksr": {}, "next_word_top1": None, "resamples": resamples}
    if n == 0 or resamples <= 0:
        return out
    rng = np.random.default_rng(seed)
    sums: dict[str, list[np.ndarray]] = {}
    columns = {"chars": ua["chars"], "top1_a": ua["top1"], "top1_b": ub["top1"],
               **{f"a{k}": ua["keys"][k] for k in ua["keys"]}, **{f"b{k}": ub["keys"][k] for k in ub["keys"]}}
    for start in range(0, resamples, 100):  # blocks of resamples: (100, n) word indices at a time
        idx = rng.integers(0, n, size=(min(100, resamples - start), n))
        for name, col in columns.items():
            sums.setdefault(name, []).append(col[idx].sum(1))
    tot = {name: np.concatenate(parts) for name, parts in sums.items()}
    chars = tot["chars"]
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(num: np.ndarray, den: np.ndarray):
        ok = den != 0
        if ok.mean() < 0.99:
            return None
        return [float(x) for x in np.percentile(num[ok] / den[ok], q)]

    for k in ua["keys"]:
        out["ksr"][k] = interval(1 - tot[f"a{k}"] / chars, 1 - tot[f"b{k}"] / chars)
    out["next_word_top1"] = interval(tot["top1_a"], tot["top1_b"])
    return out


__all__ = ["bootstrap_ratios", "word_units"]
