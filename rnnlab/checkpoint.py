"""Checkpoints: a directory of ``model.safetensors`` + ``config.json`` + ``vocab.json``
(+ ``trainer_state.safetensors`` + ``trainer_state.json`` for resuming).

Nothing is ever unpickled: tensors are safetensors, everything else JSON. Every file is written
atomically (a temporary file in the same directory, fsync, then ``os.replace``), so a crash leaves
either the old file or the new one. Weights are stored on the CPU and loaded onto any device.

A run directory (``rnnlab train --out DIR``)::

    DIR/config.json, vocab.json, model.safetensors      the latest weights (generate, eval, serve)
    DIR/trainer_state.{json,safetensors}                optimizer, RNG, position (train --resume)
    DIR/best/                                           best weights by validation loss
    DIR/checkpoints/epoch-000050/                       the last --keep snapshots, each complete
    DIR/metrics.jsonl, DIR/perplexity.png

Every file of one save carries the same ``save_id``. A snapshot directory is written under a
temporary name and renamed into place, so it is complete or absent; the top-level files are
replaced one by one afterwards. If a crash tears the top level (files from two saves), loading
notices the mismatched ``save_id`` and falls back to the newest complete snapshot.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from .data.vocab import Vocab
from .errors import RnnlabError
from .models import LanguageModel, build_model

FORMAT = "rnnlab-checkpoint"
WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"
STATE_TENSORS, STATE_JSON = "trainer_state.safetensors", "trainer_state.json"
SNAPSHOTS, BEST = "checkpoints", "best"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new bytes, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


@dataclass
class Checkpoint:
    model: LanguageModel
    vocab: Vocab
    model_config: ModelConfig
    data_config: DataConfig
    train_config: TrainConfig
    info: dict  # epoch, final metrics, rnnlab version
    path: Path | None = None  # the directory the weights were read from


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_checkpoint(out_dir: str | Path, model: LanguageModel, vocab: Vocab, model_config: ModelConfig,
                    data_config: DataConfig | None = None, train_config: TrainConfig | None = None,
                    info: dict | None = None, trainer_state: tuple[dict, dict] | None = None,
                    save_id: str | None = None) -> Path:
    """Write one checkpoint into ``out_dir`` (each file atomically; config.json last)."""
    out = Path(out_dir)
    save_id = save_id or uuid.uuid4().hex
    if trainer_state is not None:
        tensors, meta = trainer_state
        atomic_write(out / STATE_TENSORS, st_save(_cpu(tensors), metadata={"save_id": save_id}))
        atomic_write_json(out / STATE_JSON, {"save_id": save_id, **meta})
    atomic_write(out / WEIGHTS, st_save(_cpu(model.state_dict()), metadata={"format": FORMAT, "save_id": save_id}))
    atomic_write(out / VOCAB, (vocab.to_json() + "\n").encode("utf-8"))
    atomic_write_json(out / CONFIG, {
        "format": FORMAT,
        "rnnlab_version": __version__,
        "save_id": save_id,
        "model": to_dict(model_config),
        "data": to_dict(data_config or DataConfig()),
        "train": to_dict(train_config or TrainConfig()),
        "info": info or {},
    })
    return out


def save_run_checkpoint(run_dir: str | Path, snapshot: str, keep: int, model: LanguageModel, vocab: Vocab,
                        model_config: ModelConfig, data_config: DataConfig, train_config: TrainConfig,
                        info: dict, trainer_state: tuple[dict, dict]) -> None:
    """A complete snapshot ``run_dir/checkpoints/<snapshot>`` first, then the top level; keep the
    newest ``keep`` snapshots."""
    run = Path(run_dir)
    save_id = uuid.uuid4().hex
    snaps = run / SNAPSHOTS
    final = snaps / snapshot
    tmp = snaps / f".tmp-{snapshot}-{save_id[:8]}"
    save_checkpoint(tmp, model, vocab, model_config, data_config, train_config, info, trainer_state, save_id)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    save_checkpoint(run, model, vocab, model_config, data_config, train_config, info, trainer_state, save_id)
    for old in list_snapshots(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in snaps.glob(".tmp-*"):  # left by a crash during an earlier save
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)


def list_snapshots(run_dir: str | Path) -> list[Path]:
    """Complete snapshots of a run, oldest first."""
    snaps = Path(run_dir) / SNAPSHOTS
    if not snaps.is_dir():
        return []
    return sorted(p for p in snaps.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / CONFIG).is_file())


def save_id_of(ckpt_dir: Path) -> tuple[str | None, str | None]:
    """(save_id in config.json, save_id in model.safetensors) — equal for an untorn checkpoint."""
    try:
        cfg = json.loads((ckpt_dir / CONFIG).read_text(encoding="utf-8")).get("save_id")
        with open(ckpt_dir / WEIGHTS, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if 0 < n < 100_000_000 else {}
        return cfg, header.get("__metadata__", {}).get("save_id")
    except (OSError, ValueError, AttributeError):
        return None, None


def _state_save_id(ckpt_dir: Path) -> str | None:
    try:
        return json.loads((ckpt_dir / STATE_JSON).read_text(encoding="utf-8")).get("save_id")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_checkpoint_dir(ckpt_dir: str | Path) -> Path:
    """``ckpt_dir`` itself, or its newest complete snapshot if a crash tore the top level."""
    d = Path(ckpt_dir)
    ids = set(save_id_of(d))
    if (d / STATE_JSON).exists():
        ids.add(_state_save_id(d))
    if len(ids) == 1 or not list_snapshots(d):
        return d
    newest = list_snapshots(d)[-1]
    print(f"rnnlab: warning: {d} holds files of two different saves (interrupted write); "
          f"using the last complete snapshot {newest}", file=sys.stderr)
    return newest


def load_trainer_state(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The trainer state saved beside a checkpoint's weights (for ``--resume``)."""
    d = Path(ckpt_dir)
    if not (d / STATE_JSON).is_file() or not (d / STATE_TENSORS).is_file():
        raise RnnlabError(f"{d}: no trainer state to resume from; it was not written by `rnnlab train` "
                          f"(start a new run with a fresh --out)")
    meta = _read_json(d / STATE_JSON)
    try:
        tensors = st_load((d / STATE_TENSORS).read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise RnnlabError(f"{d / STATE_TENSORS}: cannot read the trainer state ({e}); the file is corrupt") from None
    if meta.get("save_id") != save_id_of(d)[0]:
        raise RnnlabError(f"{d}: trainer state and weights come from different saves; "
                          f"resume from a snapshot in {d / SNAPSHOTS}")
    return tensors, meta


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RnnlabError(f"{path}: not valid JSON (corrupt or truncated checkpoint); "
                          f"retrain or restore the file") from None


def load_checkpoint(ckpt_dir: str | Path, device: torch.device | str = "cpu", impl: str | None = None) -> Checkpoint:
    """Load a checkpoint directory onto ``device``, whatever device it was saved from.

    ``impl`` loads the weights into another implementation of the same model (e.g. a model
    trained with ``scratch`` into ``concise``): they share one parameter layout.
    """
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise RnnlabError(f"{d}: no such checkpoint directory; give the --out DIR of a training run")
    d = resolve_checkpoint_dir(d)
    for name in (WEIGHTS, CONFIG, VOCAB):
        if not (d / name).is_file():
            raise RnnlabError(f"{d}: {name} is missing, so this is not a complete checkpoint; "
                              f"give the --out DIR of a finished training run")
    meta = _read_json(d / CONFIG)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RnnlabError(f"{d / CONFIG}: not an rnnlab checkpoint config")
    vocab = Vocab.from_dict(_read_json(d / VOCAB))
    try:
        mcfg = from_dict(ModelConfig, meta["model"])
        dcfg = from_dict(DataConfig, meta.get("data", {}))
        tcfg = from_dict(TrainConfig, meta.get("train", {}))
    except (KeyError, TypeError):
        raise RnnlabError(f"{d / CONFIG}: missing or malformed model settings; the checkpoint is corrupt") from None
    if mcfg.vocab_size != len(vocab):
        raise RnnlabError(f"{d}: config says {mcfg.vocab_size} tokens but vocab.json has {len(vocab)}; "
                          f"the checkpoint is corrupt")
    try:
        tensors = st_load((d / WEIGHTS).read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise RnnlabError(f"{d / WEIGHTS}: cannot read the weights ({e}); the file is corrupt or truncated") from None
    if impl is not None:
        mcfg.impl = impl
    model = build_model(mcfg)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise RnnlabError(f"{d / WEIGHTS}: weights do not fit the model in config.json ({first})") from None
    model.to(device)
    model.eval()
    return Checkpoint(model, vocab, mcfg, dcfg, tcfg, meta.get("info", {}), d)
