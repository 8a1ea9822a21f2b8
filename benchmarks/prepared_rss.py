"""Peak memory of `rnnlab prepare` and `rnnlab train --prepared` on a corpus of ~200 MB.

Generates the corpus in a temporary directory (lines of The Time Machine drawn at random with a
fixed seed, written a batch at a time, never held whole), prepares it, trains on it for
``--seconds``, and prints each step's wall time and peak resident set size (``ru_maxrss`` of the
child process, from ``os.wait4``; memory-mapped pages that were read count too). The temporary
data is deleted afterwards. The target is a peak under 1 GB for both.

    flock /tmp/rnnlab-heavy.lock python benchmarks/prepared_rss.py            # 200 MB, 20 s of training
    python benchmarks/prepared_rss.py --megabytes 20 --seconds 5 --token word
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnnlab.data.corpus import read_text
from rnnlab.data.registry import dataset_path


def make_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write about ``megabytes`` MB of random Time Machine lines to ``path``; returns bytes written."""
    lines = [ln + "\n" for ln in read_text(dataset_path("timemachine")).splitlines() if ln.strip()]
    rng = random.Random(seed)
    target, written = int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            block = "".join(rng.choices(lines, k=5000))
            f.write(block)
            written += len(block.encode("utf-8"))
    return written


def run(cmd: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS in MB, exit code, output tail) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    rss_mb = usage.ru_maxrss / 1024  # Linux reports kilobytes
    return wall, rss_mb, proc.returncode, "\n".join(out.strip().splitlines()[-3:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megabytes", type=float, default=200.0, help="size of the generated corpus")
    p.add_argument("--seconds", type=float, default=20.0, help="training time (--max-seconds)")
    p.add_argument("--token", choices=("char", "word"), default="char")
    p.add_argument("--sampling", choices=("sequential", "random"), default="sequential")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary directory, deleted)")
    args = p.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rnnlab-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    rnnlab = [sys.executable, "-m", "rnnlab"]
    try:
        t0 = time.perf_counter()
        n = make_corpus(work / "corpus.txt", args.megabytes)
        print(f"corpus: {n / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s")
        rows = []
        wall, rss, rc, tail = run([*rnnlab, "prepare", str(work / "corpus.txt"), "--out", str(work / "prepared"),
                                   "--token", args.token])
        print(tail)
        ids = work / "prepared" / "ids.bin"
        rows.append(("prepare", wall, rss, rc))
        if rc == 0:
            print(f"ids.bin: {ids.stat().st_size / 1e6:.1f} MB")
            wall, rss, rc, tail = run([*rnnlab, "train", "--prepared", str(work / "prepared"), "--out",
                                       str(work / "run"), "--max-seconds", str(args.seconds), "--sampling",
                                       args.sampling, "--predict-every", "0", "--quiet", "--embedding-dim", "32"])
            print(tail)
            rows.append(("train --prepared", wall, rss, rc))
        print(f"{'step':18} {'wall s':>8} {'peak RSS MB':>12}  exit")
        for name, wall, rss, rc in rows:
            print(f"{name:18} {wall:8.1f} {rss:12.0f}  {rc}")
        worst = max(r[2] for r in rows)
        ok = all(r[3] == 0 for r in rows) and worst < 1024
        print(f"peak_rss_mb={worst:.0f} ({'under' if worst < 1024 else 'OVER'} 1 GB)")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from machine import describe  # benchmarks/machine.py: CPU, flags, GEMM rate

    print(describe(), flush=True)
    sys.exit(main())
