"""Ship a model to a device: a one-step ONNX graph (float32, optionally int8) and int8 PyTorch.

    export_onnx(checkpoint_dir, out_dir, int8=False) -> dict   model.onnx [+ model.int8.onnx], vocab.json, export.json
    check_onnx(out_dir, checkpoint_dir, steps=200) -> float    max |logit difference|, onnxruntime vs PyTorch
    quantize_model(model) -> LanguageModel                     dynamic int8 copy for CPU inference in PyTorch
    load_quantized(checkpoint_dir) -> Checkpoint               load_checkpoint with the model quantized

The ONNX graph is ONE step of the model for ``N`` independent rows (``N`` is dynamic)::

    ids (N,) int64, h (L, N, H) float32 [, c (L, N, H)]  ->  logits (N, V), h_next [, c_next]
    minGRU/minLSTM: h, shift (L, N, D) (the scan state, the token shift's last input) -> h_next, shift_next
    unrolled model: prev (1, N, W-1) int64 (the last W-1 ids, -1 = none yet) -> prev_next

A caller starts from zero states (``prev`` all -1), feeds one id per row and feeds ``*_next`` back.
The float graph is the model's own forward in the implementation its cell names
(``Cell.onnx_graph``: ``concise`` where the cell has torch layers, i.e. ONNX's LSTM/GRU/RNN
operators; else ``scratch``, plain tensor operations, as for the min-cells), exported by torch's
TorchScript-based exporter (the dynamo exporter needs onnxscript and took
4-9 s per export against 0.1-1 s, for the same graphs). The int8 graph is onnxruntime's dynamic
quantisation (int8 weights in a 7-bit range, activations quantised per call) of the graph of the
implementation the cell names (``Cell.int8_onnx_graph``: the LSTM's own operator, which becomes
``DynamicQuantizeLSTM``; for the others the scratch graph's MatMuls, since onnxruntime has no
int8 GRU/RNN operators).
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint, load_for_inference
from .errors import RnnlabError, UsageError
from .io import staged_dir
from .models import LanguageModel
from .version import __version__

FORMAT, OPSET, TOLERANCE = "rnnlab-onnx-step", 17, 1e-4
MODEL_FILE, INT8_FILE, VOCAB_FILE, META_FILE = "model.onnx", "model.int8.onnx", "vocab.json", "export.json"
PAD = -1  # the unrolled model's "no token yet"


def _onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise RnnlabError("ONNX export needs the onnx and onnxruntime packages: pip install 'rnnlab[export]' (or onnx onnxruntime)") from None
    return onnx, onnxruntime


def _load(checkpoint_dir, impl: str | None = None) -> Checkpoint:
    """The checkpoint on the CPU with the model in ``impl`` (default: the implementation its cell
    exports, ``Cell.onnx_graph``; the unrolled model has one implementation)."""
    if impl is None:
        ck = load_checkpoint(checkpoint_dir, "cpu")
        cell = getattr(ck.model, "cell", None)
        if cell is None or cell.onnx_graph == ck.model_config.impl:
            return ck
        impl = cell.onnx_graph
    return load_checkpoint(checkpoint_dir, "cpu", impl=impl)


def state_names(model: LanguageModel) -> list[str]:
    """The graph's state input names: h (+ c for the LSTM), prev for the unrolled model."""
    return list(model.state_names)


class OneStep(nn.Module):
    """The model's forward for one token: ids (N,), *state (each (L, N, ...)) -> logits (N, V), *state."""

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, *state: torch.Tensor):
        logits, state = self.model(ids[:, None], tuple(state))  # (N, 1, V)
        return (logits[:, 0], *state)


def _export_graph(model: LanguageModel, path: Path) -> None:
    names = state_names(model)
    state = model.begin_state(2, "cpu")
    ids = torch.zeros(2, dtype=torch.long)
    outputs = [f"{n}_next" for n in names]
    axes = {"ids": {0: "N"}, "logits": {0: "N"}, **{n: {1: "N"} for n in names + outputs}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy-exporter notice, tracer notes on the one-step loop
        torch.onnx.export(OneStep(model.eval()), (ids, *state), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["ids", *names], output_names=["logits", *outputs], dynamic_axes=axes)
    onnx, _ = _onnx()
    graph = onnx.load(str(path), load_external_data=False).graph
    missing = [n for n in ["ids", *names] if n not in {i.name for i in graph.input}]
    if missing:  # the tracer lost a state (an operation it cannot see): the graph would ignore what is fed back
        raise RnnlabError(f"the ONNX graph of {model.describe()} lost its input(s) {', '.join(missing)} "
                          f"(an operation torch's tracer cannot follow); this model cannot be exported")


def _quantize_graph(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # "consider pre-processing", notes on the int64 id tensors
    try:  # reduce_range (7-bit weights): full-range int8 saturates in x86 AVX2 kernels (u8s8, non-VNNI), up to
        # 20x the error; uint8 weights avoid that but make DynamicQuantizeLSTM 5-15x less accurate
        ort_quantize_dynamic(src, dst, weight_type=QuantType.QInt8, reduce_range=True)
    finally:
        logging.disable(disabled)


def onnx_session(path, threads: int = 1):
    """An onnxruntime CPU session for an exported graph, ``threads`` intra-op threads."""
    _, ort = _onnx()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _tensor_specs(model: LanguageModel, names: list[str], suffix: str = "") -> list[dict]:
    return [{"name": n + suffix, "shape": [d if i != 1 else "N" for i, d in enumerate(s.shape)],
             "dtype": str(s.dtype).removeprefix("torch.")} for n, s in zip(names, model.begin_state(1, "cpu"))]


EXPORT_FILES = (MODEL_FILE, INT8_FILE, VOCAB_FILE, META_FILE)


def export_onnx(checkpoint_dir, out_dir, int8: bool = False, steps: int = 200) -> dict:
    """Write ``out_dir/model.onnx`` (one step, float32; ``model.int8.onnx`` too with ``int8``),
    ``vocab.json`` and ``export.json``, check them with onnx.checker and against PyTorch over a
    ``steps``-token stream (float32: max |logit difference| <= 1e-4, else an error), and return
    the ``export.json`` contents.

    All or nothing: the files are written into a temporary folder next to ``out_dir`` and moved
    into place once every check has passed (replacing an earlier export there); a failure leaves
    no file or folder behind and is one ``RnnlabError`` line. ``out_dir`` holding anything but
    an export's files is refused (``UsageError``) before any work."""
    _onnx()
    out = Path(out_dir)
    _check_target(out)
    ck = _load(checkpoint_dir)  # a missing or damaged checkpoint fails here, before anything is written
    with staged_dir(out) as tmp:
        try:
            meta = _write_export(ck, checkpoint_dir, tmp, out, int8, steps)
        except (RnnlabError, OSError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # torch's exporter, onnx's checker, onnxruntime: one line, not their traceback
            text = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise RnnlabError(f"exporting {checkpoint_dir} ({ck.model.describe()}) to ONNX failed: "
                              f"{type(e).__name__}: {text}") from None
    return meta


def _check_target(out: Path) -> None:
    """``out`` may be created, or replaced when it holds an earlier export and nothing else."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out} exists and is not a folder (a file or a symbolic link); choose another --out")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES)
        if others:
            raise UsageError(f"--out {out} holds other files ({', '.join(others[:3])}"
                             f"{', ...' if len(others) > 3 else ''}); an export replaces its folder: choose "
                             f"another --out (an empty or earlier export folder)")


def _write_export(ck: Checkpoint, checkpoint_dir, tmp: Path, out: Path, int8: bool, steps: int) -> dict:
    """The export into ``tmp`` (named ``out`` in messages), checked; returns ``export.json``'s contents."""
    onnx, _ = _onnx()
    model, mcfg = ck.model, ck.model_config
    names = state_names(model)
    _export_graph(model, tmp / MODEL_FILE)
    onnx.checker.check_model(str(tmp / MODEL_FILE), full_check=True)
    (tmp / VOCAB_FILE).write_text(ck.vocab.to_json() + "\n", encoding="utf-8")
    checks = {"steps": steps, "float32_max_abs_logit_diff": check_onnx(tmp, checkpoint_dir, steps)}
    if not checks["float32_max_abs_logit_diff"] <= TOLERANCE:
        raise RnnlabError(f"{out / MODEL_FILE}: onnxruntime and PyTorch disagree by "
                          f"{checks['float32_max_abs_logit_diff']:.2e} (> {TOLERANCE}); the export is wrong")
    files = {"float32": MODEL_FILE}
    if int8:
        src = tmp / MODEL_FILE
        cell = getattr(model, "cell", None)  # the unrolled model has no cell and one graph
        if cell is not None and cell.int8_onnx_graph != cell.onnx_graph:
            src = tmp / f"{cell.int8_onnx_graph}.onnx"
            _export_graph(_load(checkpoint_dir, cell.int8_onnx_graph).model, src)
        _quantize_graph(src, tmp / INT8_FILE)
        if src != tmp / MODEL_FILE:
            src.unlink()
        onnx.checker.check_model(str(tmp / INT8_FILE), full_check=True)
        checks["int8_max_abs_logit_diff"] = check_onnx(tmp, checkpoint_dir, steps, int8=True)
        if not np.isfinite(checks["int8_max_abs_logit_diff"]):
            raise RnnlabError(f"{out / INT8_FILE}: the int8 model gives non-finite logits")
        files["int8"] = INT8_FILE
    L, H, V = mcfg.num_layers, mcfg.hidden_size, len(ck.vocab)
    state_in = _tensor_specs(model, names)
    meta = {
        "format": FORMAT, "format_version": 1, "rnnlab_version": __version__, "torch_version": torch.__version__,
        "onnx_opset": OPSET, "exporter": "torch.onnx.export(dynamo=False)", "files": files, "vocab_file": VOCAB_FILE,
        "cell": mcfg.model, "layers": L, "hidden_size": H, "embedding_dim": mcfg.embedding_dim, "vocab_size": V,
        "activation": mcfg.activation, "window": mcfg.window if "prev" in names else None,
        "inputs": [{"name": "ids", "shape": ["N"], "dtype": "int64"}, *state_in],
        "outputs": [{"name": "logits", "shape": ["N", V], "dtype": "float32"}, *_tensor_specs(model, names, "_next")],
        "state": [{"input": n, "output": f"{n}_next", "initial": PAD if n == "prev" else 0.0} for n in names],
        "unk_id": ck.vocab.unk_id, "token_separator": ck.vocab.separator,
        "data": ck.data_config.to_dict(), "trained": ck.info, "checks": checks,
        "usage": [
            ("text -> tokens as `data` says: preset 'letters' lowercases and turns each run of non-letters "
             "into one space ('raw' keeps the text); token 'char' = characters, 'word' = whitespace-separated words"),
            "tokens -> ids: the index in vocab.json 'tokens'; an unknown token is unk_id",
            "state: for each `state` entry an array of its input's shape with N rows, filled with 'initial'",
            "per token: outputs = run(ids=[id per row], **state); feed each '<name>_next' back as '<name>'",
            "next-token distribution: softmax(logits / temperature); ids -> text: join tokens with token_separator",
        ],
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return meta


@torch.inference_mode()
def check_onnx(out_dir, checkpoint_dir, steps: int = 200, rows: int = 1, int8: bool = False, seed: int = 0) -> float:
    """Run the exported graph in onnxruntime and the checkpoint's model in PyTorch (float32) side
    by side over a ``steps``-token pseudo-random stream for ``rows`` rows, each fed its own state
    step by step; return the max |logit difference| over all steps. ``int8``: the int8 graph."""
    sess = onnx_session(Path(out_dir) / (INT8_FILE if int8 else MODEL_FILE))
    model = _load(checkpoint_dir).model
    names = state_names(model)
    gen = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, model.cfg.vocab_size, (steps, rows), generator=gen)  # (steps, N)
    state = model.begin_state(rows, "cpu")
    ort_state = {n: s.numpy().copy() for n, s in zip(names, state)}
    worst = 0.0
    for ids in stream:  # ids (N,)
        logits, state = model(ids[:, None], state)  # (N, 1, V)
        got = sess.run(None, {"ids": ids.numpy(), **ort_state})
        ort_state = {n: s for n, s in zip(names, got[1:])}
        worst = max(worst, float(np.abs(got[0] - logits[:, 0].numpy()).max()))
    return worst


def quantize_model(model: LanguageModel) -> LanguageModel:
    """A CPU int8 copy of ``model`` for inference (``model.quantized()``, ``rnnlab.models.quantized``)."""
    return model.quantized()


def load_quantized(checkpoint_dir) -> Checkpoint:
    """``load_checkpoint`` on the CPU with the model replaced by its int8 copy."""
    return load_for_inference(checkpoint_dir, "cpu", int8=True)
