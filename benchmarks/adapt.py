"""Does the keyboard learn its user? Keystroke savings with and without online adaptation.

A model trained on one text (e.g. tinyshakespeare) meets a new user who types another (e.g. the
held-out last 10% of *The Time Machine*). The simulated user (``rnnlab.keyboard``: top-k word
completions before each keystroke, one key accepts) types the first ``--chars`` characters of it
as one session, once with the served keyboard (the word search with the checkpoint's word model)
and once with ``rnnlab serve --adapt``'s ``AdaptiveSuggester`` (the same word search, with the
client's own copy of the model taking a dynamic-evaluation step per 20 finished characters). Keystroke savings are reported over the whole session and over its second
half (after the keyboard has had the first half to learn from).

    RNNLAB_DATA_DIR=../shared/data python benchmarks/adapt.py runs/shakespeare --dataset timemachine
    python benchmarks/adapt.py runs/shakespeare my_chat.txt --chars 9000 --lr 3e-4
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rnnlab import load_checkpoint
from rnnlab.config import AdaptConfig, SuggestConfig
from rnnlab.data.corpus import read_text
from rnnlab.data.registry import dataset_path
from rnnlab.data.text_data import prepare_data
from rnnlab.keyboard import AdaptiveKeyboard, RnnlabKeyboard, evaluate_keyboard
from rnnlab.suggest import AdaptiveSuggester, checkpoint_words, load_engine, word_spans

KS = (1, 3, 5)


def savings(result: dict, text: str, start: int) -> dict:
    """Keystroke savings at each k over ``text[start:]`` (``start`` a word start), from the
    per-word ranks the simulation recorded (the simulation's own cost rule)."""
    words = [(w, s, ranks) for w, s, ranks in result["details"] if s >= start]
    chars = len(text) - start
    word_chars = sum(len(w) for w, _, _ in words)
    out = {}
    for k in KS:
        cost = 0
        for w, _, ranks in words:
            first = next((i for i, r in enumerate(ranks) if r is not None and r < k), None)
            cost += len(w) if first is None else first + 1
        out[k] = 1 - (chars - word_chars + cost) / chars
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("file", nargs="?", help="the user's text (or --dataset: its held-out last 10%%)")
    p.add_argument("--dataset")
    p.add_argument("--chars", type=int, default=9000, help="characters typed in the session (<= 10,000)")
    p.add_argument("--lr", type=float, default=AdaptConfig().lr)
    p.add_argument("--chunk", type=int, default=AdaptConfig().chunk)
    p.add_argument("--json")
    a = p.parse_args()
    if (a.file is None) == (a.dataset is None):
        p.error("give the user's text FILE or --dataset NAME")
    if a.file:
        text = read_text(a.file)
    else:
        raw = read_text(dataset_path(a.dataset))
        text = raw[len(raw) - len(raw) // 10:]
    text = text[:a.chars]
    spans = word_spans(text)
    text = text[:spans[-1][1]]
    half = next(s for s, _ in spans if s >= len(text) // 2)
    ck = load_checkpoint(a.checkpoint)
    train_ids = prepare_data(dataclasses.replace(ck.data_config), vocab=ck.vocab).train_ids
    # both as `rnnlab serve` runs them: the word search with the checkpoint's word model (when it has one)
    words = checkpoint_words(ck, SuggestConfig(), log=print)
    plain = RnnlabKeyboard(load_engine(ck, SuggestConfig()))
    adapt = AdaptiveKeyboard(AdaptiveSuggester(ck.model, ck.tokenizer, SuggestConfig(),
                                               AdaptConfig(lr=a.lr, chunk=a.chunk), train_ids, words=words))
    report = {}
    for kb in (plain, adapt):
        r = evaluate_keyboard(kb, text, KS, segments=1, preamble_chars=0, record=True)
        kb.close()
        report[kb.name] = {"all": {k: r["ksr"][k] for k in KS}, "second_half": savings(r, text, half),
                           "next_word_top1": r["next_word_top1"], "seconds": r["seconds"]}
    print(f"{len(spans):,} words, {len(text):,} characters typed in one session; second half from character {half:,}")
    print("| keyboard | KSR@1 | KSR@3 | KSR@5 | second half KSR@1 | KSR@3 | KSR@5 | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in report.items():
        print(f"| {name} | " + " | ".join(f"{r['all'][k]:.3f}" for k in KS) + " | "
              + " | ".join(f"{r['second_half'][k]:.3f}" for k in KS) + f" | {r['seconds']:.1f} |")
    gain = report["rnnlab-adapt"]["second_half"][3] / report["rnnlab"]["second_half"][3]
    print(f"adaptation: second-half KSR@3 x{gain:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    from machine import describe  # benchmarks/machine.py: CPU, flags, GEMM rate

    print(describe(), flush=True)
    main()
