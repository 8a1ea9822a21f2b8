"""Keystroke savings of rnnlab's predictive keyboard against a word-bigram keyboard.

Trains nothing. Takes a character checkpoint and a corpus, cuts the corpus' raw characters into
its first 90% (the bigram keyboard's training text, and the typed text's history) and its last 10%
(held out, as ``rnnlab train --val-fraction 0.1`` holds it out), and lets a simulated user type the
held-out part with each keyboard (``rnnlab.keyboard``: top-k whole-word completions before every
keystroke of a word, one keystroke to accept one, separators always typed). Prints both keyboards'
figures and rnnlab's ratios to the bigram's:

    RNNLAB_DATA_DIR=../shared/data python benchmarks/keyboard.py runs/shakes --dataset tinyshakespeare
    python benchmarks/keyboard.py runs/tm --dataset timemachine --json /tmp/kb/tm.json
    python benchmarks/keyboard.py runs/mine my_text.txt --max-words 3000 --segments 64
    python benchmarks/keyboard.py runs/tm --dataset timemachine --mix 0.4,0.4,0.2 --preamble 2000

``--max-words N`` types only the first N words of the held-out part (a quicker, noisier figure);
``--beam-width`` / ``--max-word-length`` set the engine's search; ``--threads`` torch's intra-op
threads (default 1: leave the other core to the other users of the machine; wrap 2-thread runs in
``flock /tmp/rnnlab-bench.lock``). The ``seconds`` row is each keyboard's wall time for the whole
simulation. ``--mix A,B,C`` adds a column for the prototype word-level re-ranker
(``rnnlab.keyboard.MixKeyboard``: the engine's candidates plus the bigram's and the recent words',
scored exactly by the character model and mixed with the bigram and a cache of recent words).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rnnlab.data.corpus import read_text
from rnnlab.data.registry import dataset_path
from rnnlab.keyboard import BigramKeyboard, MixKeyboard, RnnlabKeyboard, evaluate_keyboard, ratios, split_heldout
from rnnlab.keyboard.run import table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a character checkpoint directory (rnnlab train --out DIR)")
    p.add_argument("file", nargs="?", help="the corpus as a text file (or --dataset NAME)")
    p.add_argument("--dataset", help="a registry dataset: timemachine, tinyshakespeare, ...")
    p.add_argument("--val-fraction", type=float, default=0.1, help="the held-out last fraction (default 0.1)")
    p.add_argument("--ks", default="1,3,5", help="numbers of completions shown (default 1,3,5)")
    p.add_argument("--segments", type=int, default=48, help="pieces of the held-out text typed concurrently")
    p.add_argument("--max-words", type=int, default=None, help="type only the first N held-out words")
    p.add_argument("--beam-width", type=int, default=None)
    p.add_argument("--max-word-length", type=int, default=None)
    p.add_argument("--bigram-lower", choices=("kn", "ml"), default="kn",
                   help="the bigram's lower order: Kneser-Ney continuation counts or unigram frequency")
    p.add_argument("--mix", default=None, metavar="A,B,C",
                   help="also evaluate the prototype re-ranker rnnlab.keyboard.MixKeyboard with weights A (character "
                        "model), B (bigram), C (recent-word cache), e.g. 0.4,0.4,0.2")
    p.add_argument("--oov-factor", type=float, default=0.25,
                   help="--mix: multiply the words outside the training lexicon by this (default 0.25)")
    p.add_argument("--preamble", type=int, default=300,
                   help="characters of text before each concurrently typed piece given as context (default 300; "
                        "the --mix cache sees its words)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args(argv)
    if (a.file is None) == (a.dataset is None):
        p.error("give a corpus FILE or --dataset NAME")
    torch.set_num_threads(a.threads)
    path = Path(a.file) if a.file else dataset_path(a.dataset)
    train, held = split_heldout(read_text(path), a.val_fraction)
    ks = tuple(int(k) for k in a.ks.split(","))
    search = {k: v for k, v in (("beam_width", a.beam_width), ("max_word_length", a.max_word_length))
                     if v is not None}
    t0 = time.perf_counter()
    nn = RnnlabKeyboard.from_checkpoint(a.checkpoint, "cpu", **search)
    bg = BigramKeyboard.from_text(train, lower=a.bigram_lower)
    print(f"{path.name}: {len(train):,} training characters, {len(held):,} held out; "
          f"bigram: {len(bg.model.vocab):,} words, discount {bg.model.discount:.3f} "
          f"(built in {time.perf_counter() - t0:.1f} s with the checkpoint)", file=sys.stderr)
    keyboards = [nn]
    if a.mix:
        weights = tuple(float(x) for x in a.mix.split(","))
        if len(weights) != 3 or min(weights) < 0 or not sum(weights):
            p.error("--mix takes three non-negative weights, not all 0, e.g. 0.4,0.4,0.2")
        # its own engine (its own state cache), so that rnnlab's column is measured alone
        mix_nn = RnnlabKeyboard.from_checkpoint(a.checkpoint, "cpu", **search)
        keyboards.append(MixKeyboard(mix_nn, bg.model, weights, oov_factor=a.oov_factor, name="mix"))
    keyboards.append(bg)
    results = {}
    try:
        for kb in keyboards:
            results[kb.name] = evaluate_keyboard(kb, held, ks, history=train, segments=a.segments,
                                                 max_words=a.max_words, preamble_chars=a.preamble)
    finally:
        for kb in keyboards:
            if hasattr(kb, "close"):
                kb.close()
    r = results["rnnlab"]
    print(f"{r['words']:,} words, {r['characters']:,} characters ({r['separator_chars']:,} separators) typed; "
          f"checkpoint {a.checkpoint}")
    rat = {n: ratios(results[n], results["bigram"]) for n in results if n != "bigram"}
    print(table({"keyboards": results, "ratios": rat}))
    if a.json:
        Path(a.json).write_text(json.dumps({**results, "ratios": rat}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
