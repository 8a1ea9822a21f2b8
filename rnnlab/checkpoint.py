"""Checkpoints: a directory of ``model.safetensors`` + ``config.json`` + ``vocab.json``
(+ ``trainer_state.safetensors`` + ``trainer_state.json`` for resuming: ``rnnlab.trainer_state``).

Nothing is ever unpickled: tensors are safetensors, everything else JSON, and every section is
validated on load (types, bounds, and the weights' shapes against the config *before* the model
is allocated), so a damaged checkpoint fails with one line naming the problem. Every file is
written atomically (``rnnlab.io``). Weights are stored on the CPU and loaded onto any device.

A run directory (``rnnlab train --out DIR``)::

    DIR/config.json, vocab.json, model.safetensors      the latest weights (generate, eval, serve)
    DIR/trainer_state.{json,safetensors}                optimizer, RNG, position (train --resume)
    DIR/best/                                           best weights by validation loss
    DIR/checkpoints/epoch-000050/                       the last --keep snapshots, each complete

Every file of one save carries the same ``save_id``; snapshots and their ordering live in
``rnnlab.runs``. If a crash tears the top level (files from two saves), loading notices the
mismatched ``save_id`` and falls back to the newest complete snapshot.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from .config import DataConfig, InferenceConfig, ModelConfig, RunConfig, TrainConfig
from .data.tokenizer import Tokenizer
from .data.vocab import Vocab
from .errors import RnnlabError
from .io import atomic_write, atomic_write_json, check_input_file, os_error_hint, read_json
from .models import LanguageModel, build_model
from .runtime import check_memory
from .version import __version__

FORMAT = "rnnlab-checkpoint"
WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"
STATE_TENSORS, STATE_JSON = "trainer_state.safetensors", "trainer_state.json"
SNAPSHOTS, BEST = "checkpoints", "best"


@dataclass
class Checkpoint:
    model: LanguageModel
    tokenizer: Tokenizer
    model_config: ModelConfig
    data_config: DataConfig
    train_config: TrainConfig
    run_config: RunConfig
    info: dict  # epoch, final metrics, rnnlab version
    path: Path | None = None  # the directory the weights were read from

    @property
    def vocab(self) -> Vocab:
        return self.tokenizer.vocab


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _float32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as a checkpoint stores them: float32 at least (a bfloat16 copy is widened, exactly),
    so a checkpoint loads and runs anywhere whatever precision made it."""
    return {k: v.float() if v.dtype in (torch.bfloat16, torch.float16) else v for k, v in tensors.items()}


def save_checkpoint(out_dir: str | Path, model: LanguageModel, tokenizer: Tokenizer, model_config: ModelConfig,
                    data_config: DataConfig | None = None, train_config: TrainConfig | None = None,
                    run_config: RunConfig | None = None, info: dict | None = None,
                    trainer_state: tuple[dict, dict] | None = None, save_id: str | None = None) -> Path:
    """Write one checkpoint into ``out_dir`` (each file atomically; config.json last)."""
    out = Path(out_dir)
    save_id = save_id or uuid.uuid4().hex
    if trainer_state is not None:
        tensors, meta = trainer_state
        atomic_write(out / STATE_TENSORS, st_save(_cpu(tensors), metadata={"save_id": save_id}))
        atomic_write_json(out / STATE_JSON, {"save_id": save_id, **meta})
    atomic_write(out / WEIGHTS, st_save(_float32(_cpu(model.state_dict())), metadata={"format": FORMAT,
                                                                                       "save_id": save_id}))
    atomic_write(out / VOCAB, (tokenizer.vocab.to_json() + "\n").encode("utf-8"))
    data_config = data_config or DataConfig(preset=tokenizer.preset, token=tokenizer.token)
    data = data_config.to_dict()
    for key in ("path", "prepared"):  # absolute: `rnnlab eval DIR` reads the text again from any directory
        if data.get(key):
            data[key] = os.path.abspath(data[key])
    atomic_write_json(out / CONFIG, {
        "format": FORMAT,
        "rnnlab_version": __version__,
        "save_id": save_id,
        "model": model_config.to_dict(),
        "data": data,
        "train": (train_config or TrainConfig()).to_dict(),
        "run": (run_config or RunConfig()).to_dict(),
        "info": info or {},
    })
    return out


def weights_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict]:
    """The tensor shapes and metadata of a safetensors file, read from its header only."""
    check_input_file(path, "weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, (f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RnnlabError(f"{path}: cannot read the weights ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                          f"the file is corrupt or truncated") from None


def save_id_of(ckpt_dir: Path) -> tuple[str | None, str | None]:
    """(save_id in config.json, save_id in model.safetensors) — equal for an untorn checkpoint."""
    cfg = _json_field(ckpt_dir / CONFIG, "save_id")
    try:
        _, meta = weights_header(ckpt_dir / WEIGHTS)
        weights = meta.get("save_id")
    except RnnlabError:
        weights = None
    return cfg, weights


def _json_field(path: Path, key: str):
    """``key`` of the JSON object in ``path``, or None if the file is missing, not a regular file,
    too large, damaged or not an object (``read_json``'s checks: never a hang on a FIFO)."""
    try:
        obj = read_json(path)
    except RnnlabError:
        return None
    return obj.get(key) if isinstance(obj, dict) else None


def _state_save_id(ckpt_dir: Path) -> str | None:
    return _json_field(ckpt_dir / STATE_JSON, "save_id")


def _position(snapshot: Path) -> tuple[int, float, str]:
    """(optimizer step, modification time, name) of a snapshot: its training position first."""
    try:
        step = int((_json_field(snapshot / CONFIG, "info") or {}).get("step", -1))
    except (ValueError, AttributeError, TypeError):
        step = -1
    try:
        mtime = (snapshot / CONFIG).stat().st_mtime
    except OSError:
        mtime = 0.0
    return step, mtime, snapshot.name


def list_snapshots(run_dir: str | Path) -> list[Path]:
    """Complete snapshots of a run, oldest training position first."""
    snaps = Path(run_dir) / SNAPSHOTS
    try:
        found = [p for p in snaps.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / CONFIG).is_file()]
    except OSError:
        return []
    return sorted(found, key=_position)


def resolve_checkpoint_dir(ckpt_dir: str | Path) -> Path:
    """``ckpt_dir`` itself, or its newest complete snapshot if a crash tore the top level."""
    d = Path(ckpt_dir)
    cfg_id, weights_id = save_id_of(d)
    ids = {cfg_id, weights_id}
    if (d / STATE_JSON).exists():
        ids.add(_state_save_id(d))
    snapshots = list_snapshots(d)
    if len(ids) == 1 or not snapshots:
        return d
    why = ("its weights are unreadable" if weights_id is None and (d / WEIGHTS).exists() else
           "it holds files of two different saves (an interrupted write)")
    print(f"rnnlab: warning: {d}: {why}; using the last complete snapshot {snapshots[-1]}", file=sys.stderr)
    return snapshots[-1]


def read_configs(ckpt_dir: str | Path) -> tuple[DataConfig, ModelConfig, TrainConfig, RunConfig, dict]:
    """The validated settings of a checkpoint directory (no weights read)."""
    d = Path(ckpt_dir)
    meta = read_json(d / CONFIG, "checkpoint config")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RnnlabError(f"{d / CONFIG}: not an rnnlab checkpoint config")
    try:
        mcfg = ModelConfig.from_dict(meta.get("model"))
        dcfg = DataConfig.from_dict(meta.get("data", {}))
        tcfg = TrainConfig.from_dict(meta.get("train", {}))
        # checkpoints of rnnlab 0.1 kept the run controls in "train"; one stored without a recipe trained as configured
        run = meta.get("run", meta.get("train", {}))
        rcfg = RunConfig.from_dict({"recipe": "book", **run} if isinstance(run, dict) else run)
    except RnnlabError as e:
        raise RnnlabError(f"{d / CONFIG}: {e}; the checkpoint is damaged (retrain, or restore the file)") from None
    info = meta.get("info", {})
    return dcfg, mcfg, tcfg, rcfg, info if isinstance(info, dict) else {}


def load_checkpoint(ckpt_dir: str | Path, device: torch.device | str = "cpu", impl: str | None = None) -> Checkpoint:
    """Load a checkpoint directory onto ``device``, whatever device it was saved from.

    ``impl`` loads the weights into another implementation of the same model (e.g. a model
    trained with ``scratch`` into ``concise``): they share one parameter layout.
    """
    d = Path(ckpt_dir)
    try:
        is_dir = stat.S_ISDIR(d.stat().st_mode)
    except FileNotFoundError:
        raise RnnlabError(f"{d}: no such checkpoint directory; give the --out DIR of a training run") from None
    except OSError as e:  # a symbolic-link loop, a name too long, no permission...
        raise RnnlabError(f"{d}: cannot open it ({e.strerror or e}); {os_error_hint(e)}") from None
    if not is_dir:
        raise RnnlabError(f"{d}: is a file, not a checkpoint directory; give the --out DIR of a training run")
    d = resolve_checkpoint_dir(d)
    for name in (WEIGHTS, CONFIG, VOCAB):
        if not (d / name).exists() and not (d / name).is_symlink():
            raise RnnlabError(f"{d}: {name} is missing, so this is not a complete checkpoint; "
                              f"give the --out DIR of a finished training run")
        check_input_file(d / name, "checkpoint file")  # not a FIFO, a device, a folder...
    dcfg, mcfg, tcfg, rcfg, info = read_configs(d)
    vocab = Vocab.from_dict(read_json(d / VOCAB, "vocabulary"))
    if mcfg.vocab_size != len(vocab):
        raise RnnlabError(f"{d}: config.json says {mcfg.vocab_size} tokens but vocab.json has {len(vocab)}; "
                          f"the checkpoint is damaged")
    if (vocab.separator == " ") != (dcfg.token == "word"):
        raise RnnlabError(f"{d}: vocab.json's separator does not match the token setting {dcfg.token!r}; "
                          f"the checkpoint is damaged")
    if impl is not None:
        mcfg.impl = impl
        if impl != "fast":
            mcfg.weight_drop = 0.0  # DropConnect is a training device: inference in any impl never drops
        mcfg.validate()
    shapes, _ = weights_header(d / WEIGHTS)
    with torch.device("meta"):  # the shapes the config implies, with nothing allocated
        expected = {k: tuple(v.shape) for k, v in build_model(mcfg).state_dict().items()}
    if shapes != expected:
        raise RnnlabError(f"{d / WEIGHTS}: the weights do not fit the model in config.json ({_shape_diff(expected, shapes)}); "
                          f"the checkpoint is damaged")
    model = build_model_within_memory(mcfg, d / WEIGHTS)
    read_weights(model, d / WEIGHTS)
    model.to(device)
    model.eval()
    tokenizer = Tokenizer(vocab, dcfg.preset, dcfg.token, dcfg.encoding, dcfg.errors)
    return Checkpoint(model, tokenizer, mcfg, dcfg, tcfg, rcfg, info, d)


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _weights_layout(weights: Path) -> tuple[int, dict]:
    """(offset of the data, {name: (dtype, shape, begin, end)}) of a safetensors file (its header was
    validated by ``weights_header``: offsets inside the file, shapes and sizes consistent)."""
    try:
        with open(weights, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        layout = {k: (_DTYPES[v["dtype"]], tuple(v["shape"]), *v["data_offsets"]) for k, v in header.items()
                  if k != "__metadata__"}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RnnlabError(f"{weights}: cannot read the weights ({e}); the file is corrupt or truncated") from None
    return 8 + n, layout


def build_model_within_memory(mcfg: ModelConfig, weights: Path) -> LanguageModel:
    """The model of ``mcfg``, once the machine is known to hold it, and to hold what loading
    ``weights`` into it takes besides (``read_weights``: one tensor whose type differs from the
    model's, at most)."""
    _, layout = _weights_layout(weights)
    largest = max((end - begin for _, _, begin, end in layout.values()), default=0)
    check_memory(mcfg.parameter_count() * 4 + largest, "loading the model")
    return build_model(mcfg)


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in ``t`` (checked a slice at a time: no temporary the size of ``t``)."""
    return all(bool(torch.isfinite(piece).all()) for piece in t.reshape(-1).split(1 << 18))


def read_weights(model: LanguageModel, weights: Path) -> None:
    """Read the tensors of ``weights`` (already checked against the model's shapes) straight into
    the model's own CPU tensors, one at a time with plain reads: no copy of the file in memory (its
    bytes are not even memory-mapped), so loading peaks at the model's size. A tensor holding NaN
    or infinity is refused (a model that samples nonsense, answers invalid JSON, fails in the
    server)."""
    base, layout = _weights_layout(weights)
    params = model.state_dict()  # the model's own tensors (parameters and buffers), filled in place
    try:
        with open(weights, "rb") as f, torch.no_grad():
            for name, t in params.items():
                dtype, shape, begin, end = layout[name]
                f.seek(base + begin)
                if dtype == t.dtype and t.is_contiguous() and t.device.type == "cpu" and dtype != torch.bfloat16:
                    got = f.readinto(memoryview(t.numpy()).cast("B")) if end > begin else 0  # into the model itself
                else:  # another type: through one buffer of this tensor's size
                    buf = bytearray(end - begin)
                    got = f.readinto(buf)
                    if end > begin:
                        t.copy_(torch.frombuffer(buf, dtype=dtype).reshape(shape))
                if got != end - begin:
                    raise RnnlabError(f"{weights}: the file ends inside tensor {name}; it is truncated")
                if t.is_floating_point() and not _all_finite(t):
                    bad = int((~torch.isfinite(t)).sum())
                    raise RnnlabError(f"{weights}: tensor {name} holds {bad:,} non-finite values (NaN or infinity); "
                                      f"the checkpoint is damaged or its training diverged: use a snapshot in "
                                      f"{weights.parent / SNAPSHOTS} or retrain")
    except OSError as e:
        raise RnnlabError(f"{weights}: cannot read the weights ({e.strerror or e}); {os_error_hint(e)}") from None
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        raise RnnlabError(f"{weights}: the weights do not fit the model in config.json ({first})") from None


def _shape_diff(expected: dict, got: dict) -> str:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing:
        return f"tensor {missing[0]} {list(expected[missing[0]])} is missing"
    if extra:
        return f"unexpected tensor {extra[0]} {list(got[extra[0]])}"
    name = next(k for k in sorted(expected) if expected[k] != got[k])
    return f"{name} is {list(got[name])} in the file, {list(expected[name])} by the config"


def load_for_inference(ckpt_dir: str | Path, device: torch.device | str | InferenceConfig = "cpu",
                       int8: bool = False, precision: str = "fp32", log=None) -> Checkpoint:
    """``load_checkpoint``, or with ``int8`` the model's int8 CPU copy (``rnnlab.models.quantized``:
    about 4x smaller weights, held-out loss within a few thousandths of a nat), or with ``precision``
    ``bf16`` its bfloat16 copy for one-token work (``rnnlab.precision.for_inference``); ``auto``
    measures the model's one-token step in both and says which it took through ``log``.
    ``device`` may be the whole ``InferenceConfig`` (device, int8, precision) instead."""
    import dataclasses

    from .precision import check, for_inference, inference_choice

    inference = device if isinstance(device, InferenceConfig) else \
        InferenceConfig(device=str(device), int8=int8, precision=precision)
    inference.validate()
    device, int8, precision = inference.torch_device(), inference.int8, inference.precision
    check(precision, device)
    ck = load_checkpoint(ckpt_dir, device)
    if int8:
        return dataclasses.replace(ck, model=ck.model.quantized())
    if precision == "auto":
        choice = inference_choice(ck.model, torch.device(device))
        precision = choice.precision
        if log is not None:
            log(choice.describe())
    return dataclasses.replace(ck, model=for_inference(ck.model, precision)) if precision == "bf16" else ck
