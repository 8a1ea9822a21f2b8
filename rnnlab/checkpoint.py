"""Checkpoints: a directory of ``model.safetensors`` + ``config.json`` + ``vocab.json``.

Nothing is ever unpickled: weights are safetensors, everything else JSON. Every file is written
atomically (a temporary file in the same directory, fsync, then ``os.replace``), so a crash leaves
either the old file or the new one. Weights are stored on the CPU and loaded onto any device.
"""
from __future__ import annotations

import json
import os
import tempfile
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


def save_checkpoint(out_dir: str | Path, model: LanguageModel, vocab: Vocab, model_config: ModelConfig,
                    data_config: DataConfig | None = None, train_config: TrainConfig | None = None,
                    info: dict | None = None) -> Path:
    out = Path(out_dir)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS, st_save(tensors, metadata={"format": FORMAT}))
    atomic_write(out / VOCAB, (vocab.to_json() + "\n").encode("utf-8"))
    atomic_write_json(out / CONFIG, {
        "format": FORMAT,
        "rnnlab_version": __version__,
        "model": to_dict(model_config),
        "data": to_dict(data_config or DataConfig()),
        "train": to_dict(train_config or TrainConfig()),
        "info": info or {},
    })
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RnnlabError(f"{path}: not valid JSON (corrupt or truncated checkpoint); "
                          f"retrain or restore the file") from None


def load_checkpoint(ckpt_dir: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint directory onto ``device``, whatever device it was saved from."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise RnnlabError(f"{d}: no such checkpoint directory; give the --out DIR of a training run")
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
    model = build_model(mcfg)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise RnnlabError(f"{d / WEIGHTS}: weights do not fit the model in config.json ({first})") from None
    model.to(device)
    model.eval()
    return Checkpoint(model, vocab, mcfg, dcfg, tcfg, meta.get("info", {}))
