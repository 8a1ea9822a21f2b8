"""The end-to-end jobs the CLI (and a notebook) run: data -> vocab -> ids -> model -> training."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import save_checkpoint
from .config import DataConfig, ModelConfig, TrainConfig
from .data.corpus import load_corpus
from .data.registry import DATASETS, dataset_path
from .data.vocab import Vocab
from .errors import UsageError
from .models import LanguageModel, build_model
from .runtime import seed_everything, select_device
from .sampling import generate
from .training import MetricsWriter, Trainer

Log = Callable[[str], None]


@dataclass
class PreparedData:
    vocab: Vocab
    ids: torch.Tensor  # (N,) long: the token stream used for training
    source: str
    default_prefixes: list[str]


def prepare_data(cfg: DataConfig, errors: str = "strict") -> PreparedData:
    """Read, preprocess and tokenise the corpus, build the vocabulary, encode the stream."""
    cfg.validate()
    if (cfg.path is None) == (cfg.dataset is None):
        raise UsageError("give either a text FILE or --dataset NAME, not both")
    path = Path(cfg.path) if cfg.path is not None else dataset_path(cfg.dataset)
    corpus = load_corpus(path, cfg.preset, cfg.token, cfg.encoding, errors)
    vocab = Vocab.build(corpus.tokens, min_freq=cfg.min_freq, separator="" if cfg.token == "char" else " ")
    tokens = corpus.tokens[:cfg.max_tokens] if cfg.max_tokens else corpus.tokens
    ids = torch.tensor(vocab.encode(tokens), dtype=torch.long)
    if cfg.dataset is not None:
        prefixes = list(DATASETS[cfg.dataset].prefixes)
    else:
        prefixes = [vocab.separator.join(tokens[: (10 if cfg.token == "char" else 2)])]
    if cfg.preset == "letters":
        prefixes = [p.lower() for p in prefixes]
    return PreparedData(vocab, ids, str(path), prefixes)


def train_run(dcfg: DataConfig, mcfg: ModelConfig, tcfg: TrainConfig, out_dir: str | Path,
              log: Log = print, errors: str = "strict", log_every: int = 10) -> tuple[LanguageModel, Vocab, list[dict]]:
    """Train a model as configured, write ``metrics.jsonl`` and a checkpoint into ``out_dir``."""
    mcfg.validate()
    tcfg.validate()
    data = prepare_data(dcfg, errors)
    if not tcfg.prefixes:
        tcfg.prefixes = data.default_prefixes
    device = select_device(tcfg.device)
    seed_everything(tcfg.seed)
    mcfg.vocab_size = len(data.vocab)
    model = build_model(mcfg).to(device)
    out = Path(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"corpus {data.source}: {len(data.ids):,} tokens, vocabulary {len(data.vocab)}; "
        f"model {mcfg.impl} {mcfg.model} ({n_params:,} parameters) on {device}")

    def report(trainer: Trainer, m: dict) -> None:
        e = m["epoch"]
        if e == 1 or e % log_every == 0 or e == tcfg.epochs:
            log(f"epoch {e:4d}  loss {m['train_loss']:.4f}  ppl {m['train_ppl']:.3f}  "
                f"{m['tokens_per_sec']:,.0f} tokens/s  {m['elapsed_s']:.1f}s")
        if tcfg.predict_every and (e % tcfg.predict_every == 0 or e == tcfg.epochs):
            for p in tcfg.prefixes:
                log("  > " + generate(trainer.model, data.vocab, p, tcfg.predict_length).replace("\n", "\\n"))

    trainer = Trainer(model, tcfg, data.ids, callbacks=[MetricsWriter(out / "metrics.jsonl"), report])
    start = time.perf_counter()
    history = trainer.fit()
    final = history[-1]
    save_checkpoint(out, model, data.vocab, mcfg, dcfg, tcfg, info={
        "epoch": trainer.epoch, "train_loss": final["train_loss"], "train_ppl": final["train_ppl"],
        "tokens": len(data.ids), "source": data.source, "wall_s": time.perf_counter() - start,
    })
    log(f"final train perplexity {final['train_ppl']:.3f}, "
        f"median {statistics.median(h['tokens_per_sec'] for h in history):,.0f} tokens/s; checkpoint in {out}")
    return model, data.vocab, history
