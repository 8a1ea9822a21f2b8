"""Keystroke savings of rnnlab's served keyboard against the fair n-gram keyboard and Presage, for
several checkpoints in one go: ``rnnlab eval DIR --keyboard`` for each (``rnnlab.keyboard.run``),
one table per checkpoint, all figures in one JSON file.

Trains nothing. Each checkpoint types its own test split (the last ``--val-fraction`` of its
corpus), its baselines built from its training split; its word model and tuned settings are the
ones saved with it (``rnnlab words DIR`` builds them for an older checkpoint).

    RNNLAB_DATA_DIR=../shared/data python benchmarks/keyboard.py runs/tinyshakespeare runs/timemachine
    python benchmarks/keyboard.py runs/tm --words 0 --json /tmp/kb.json      # every test word
    python benchmarks/keyboard.py runs/tm --file my_text.txt                  # a user's own text, typed whole

``--threads`` sets torch's intra-op threads (default 1: the one-step matrices are small, and the
other core stays free for the other users of the machine).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from rnnlab.config import DataConfig, KeyboardEval
from rnnlab.keyboard.run import evaluate_keyboards, table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="character checkpoint directories (rnnlab train --out DIR)")
    p.add_argument("--file", help="type this text instead of each run's test split")
    p.add_argument("--words", type=int, default=KeyboardEval().words, help="words typed (0: all)")
    p.add_argument("--presage", choices=("auto", "off"), default="auto")
    p.add_argument("--bootstrap", type=int, default=KeyboardEval().bootstrap)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--json", help="also write every report here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    settings = KeyboardEval(words=a.words, presage=a.presage, bootstrap=a.bootstrap)
    given = DataConfig(path=a.file) if a.file else None
    reports = {}
    for ckpt in a.checkpoints:
        report = evaluate_keyboards(ckpt, given, settings, log=lambda m: print(m, file=sys.stderr))
        r = report["keyboards"]["rnnlab"]
        print(f"\n{ckpt}: {report['source']}, {r['words']:,} words, {r['characters']:,} characters typed\n"
              f"{table(report)}")
        reports[str(ckpt)] = report
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
