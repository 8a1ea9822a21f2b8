"""A run directory over time: snapshots in training order, retention, the writer's lock, and what
``--overwrite`` clears. (One checkpoint's files are ``rnnlab.checkpoint``'s.)

Snapshots are ``DIR/checkpoints/<name>/`` (``epoch-000050``, ``interrupted-step-00001234``), each a
complete checkpoint written under a temporary name and renamed into place. They are ordered by
their training position (the optimizer step saved in their ``config.json``), not by name, so the
newest ``--keep`` survive whatever their kind; a save that fails (a full disk) leaves no
temporary folder behind and the previous snapshots intact.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from .checkpoint import (BEST, CONFIG, SNAPSHOTS, STATE_JSON, STATE_TENSORS, VOCAB, WEIGHTS, list_snapshots,
                         save_checkpoint)
from .errors import RnnlabError, UsageError
from .io import atomic_write, os_error_hint, read_json

LOCK = ".rnnlab-train.lock"
CHAT = "chat.txt"  # with --chat: the cleaned messages the run trains on
RUN_FILES = (WEIGHTS, CONFIG, VOCAB, STATE_TENSORS, STATE_JSON, "metrics.jsonl", "perplexity.png")
WORD_FILES = ("words.json", "words.safetensors")  # the keyboard's word model (rnnlab.suggest.store), built last


def save_run_checkpoint(run_dir: str | Path, snapshot: str, keep: int, *args, replace_run: bool = False,
                        replace_best: bool = True, **kwargs) -> None:
    """A complete snapshot ``run_dir/checkpoints/<snapshot>`` first, then the top level; keep the
    ``keep`` snapshots latest in training. ``args``/``kwargs`` are ``save_checkpoint``'s after the
    directory. ``replace_run`` (the first save of an ``--overwrite`` run) clears the previous run
    once the new snapshot is safely written, so a save that fails leaves the old run whole."""
    run = Path(run_dir)
    save_id = uuid.uuid4().hex
    snaps = run / SNAPSHOTS
    final = snaps / snapshot
    tmp = snaps / f".tmp-{snapshot}-{save_id[:8]}"
    try:
        save_checkpoint(tmp, *args, save_id=save_id, **kwargs)
        if replace_run:
            clear_run(run, keep=tmp, best=replace_best)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as e:
        raise RnnlabError(f"cannot write the snapshot {final} ({e.strerror or e}); {os_error_hint(e)}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(run, *args, save_id=save_id, **kwargs)
    for old in list_snapshots(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in snaps.glob(".tmp-*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)


def clear_run(run_dir: str | Path, keep: Path | None = None, best: bool = True) -> None:
    """What ``--overwrite`` removes when a new run has its first snapshot: the previous run's
    checkpoint files, word model, snapshots and best weights (nothing else in the folder; ``keep``
    — the new snapshot — stays)."""
    run = Path(run_dir)
    try:
        for name in RUN_FILES[:5] + WORD_FILES:  # the checkpoint files; metrics and plot are the new run's already
            (run / name).unlink(missing_ok=True)
        (run / CHAT).unlink(missing_ok=True)
        if best and (run / BEST).is_dir():
            shutil.rmtree(run / BEST)
        if (run / SNAPSHOTS).is_dir():
            for snap in (run / SNAPSHOTS).iterdir():
                if snap != keep:
                    shutil.rmtree(snap) if snap.is_dir() else snap.unlink()
    except OSError as e:
        raise RnnlabError(f"cannot clear the previous run in {run} ({e.strerror or e}); {os_error_hint(e)}") from None


def record_chat(run_dir: str | Path, text: str) -> None:
    """Keep the cleaned chat text a run trains on in ``run_dir/chat.txt`` (once: it never changes)."""
    path = Path(run_dir) / CHAT
    if not path.is_file():
        atomic_write(path, text.encode("utf-8"))


def check_chat(run_dir: str | Path, text: str, source: str) -> None:
    """``--resume``: the chat export must still give the messages the run was trained on."""
    path = Path(run_dir) / CHAT
    if path.is_file() and path.read_bytes() != text.encode("utf-8"):
        raise UsageError(f"the chat export {source} now gives other messages than the run in {run_dir} was trained "
                         f"on ({path}); resume with the export as it was, or start a new run (--init-from "
                         f"{run_dir} fine-tunes on the new one)")


def check_ranges(run_dir: str | Path, ranges: dict) -> None:
    """``--resume``: the text must split as it did when the run began (its latest checkpoint's
    ``info.ranges``); a run split by an older rnnlab (its selection slice just before the test split)
    would otherwise go on training on its own selection slice."""
    snaps = list_snapshots(run_dir)
    for cfg in ([snaps[-1] / CONFIG] if snaps else []) + [Path(run_dir) / CONFIG]:
        if not cfg.is_file():
            continue
        info = read_json(cfg, "checkpoint configuration")
        stored = info.get("info", {}).get("ranges") if isinstance(info, dict) else None
        if stored and stored != ranges:
            raise UsageError(f"the run in {run_dir} split its text as {stored}, the text now splits as {ranges} "
                             f"(another text, other fractions, or a run of an older rnnlab); resume with the same "
                             f"text and settings, or start a new run (--init-from {run_dir} keeps its weights)")
        return


def prepare_run_dir(run_dir: str | Path) -> Path:
    """Make sure ``run_dir`` can hold a run: a folder (created if missing), writable."""
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise UsageError(f"--out {run} is a file; give a directory (a new or an existing run's)")
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RnnlabError(f"cannot write to --out {run} ({e.strerror or e}); {os_error_hint(e)}") from None
    return run


class RunLock:
    """An OS lock on a run directory held while a training writes into it: a second training into
    the same ``--out`` is refused with a message instead of mixing its files with the first's.
    The lock dies with its holder (``filelock``)."""

    def __init__(self, run_dir: Path):
        from filelock import FileLock

        self.path = Path(run_dir) / LOCK
        self._lock = FileLock(str(self.path))

    def __enter__(self) -> "RunLock":
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise UsageError(f"another `rnnlab train` is writing to {self.path.parent}; wait for it to finish, "
                             f"or choose another --out") from None
        except OSError as e:
            raise RnnlabError(f"cannot lock {self.path} ({e.strerror or e}); {os_error_hint(e)}") from None
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
