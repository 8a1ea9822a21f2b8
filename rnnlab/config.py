"""Typed configuration, one dataclass per concern, stored in every checkpoint as JSON.

    DataConfig      where the text comes from and how it becomes tokens
    ModelConfig     the architecture (``rnnlab.models.config``)
    TrainConfig     how to optimise: batching, optimiser, schedule, clipping, seed
    Precision       the number format of the arithmetic (fp32, bf16 autocast, or auto: measured)
    RunConfig       how long and how to run it: epochs, time limit, device, logging, checkpoints,
                    and the precision it trains in (a ``Precision``)
    GenerateConfig  how to decode: length, temperature, top-k, top-p, samples, seed
    SuggestConfig   how the keyboard searches: k, beam width, longest word
    Device, InferenceConfig  where and how a trained model runs: device, precision, int8 copy
                    (``generate``, ``suggest``, ``serve``, ``eval``; ``words`` takes the device only)
    AdaptConfig     adaptation as the model reads: ``eval --dynamic-*`` and ``serve --adapt-*``
    ServeConfig     the server: address, bounds, workers (what ``serve.create_app`` takes)

Every field is declared once with its help, choices and bounds (``rnnlab.fields.setting``); the CLI
generates its flags from them (``num_steps`` is ``--num-steps``) and the server reads the same
bounds, so a value is validated once, in one place, for the CLI, the library and the server.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UsageError
from .fields import Settings, setting
from .models.config import ModelConfig

PRESETS = ("raw", "letters")
TOKENS = ("char", "word")
SAMPLINGS = ("sequential", "random")
CHAT_FORMATS = ("auto", "whatsapp", "telegram", "messenger", "discord", "slack", "text")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICE_HELP = "auto (CUDA when present, else the CPU), cpu, cuda, cuda:N, mps"

# one maximum per limit, for the CLI, the library and the server alike
MAX_TEXT_CHARS = 10_000  # a prompt, or the text typed so far
MAX_LENGTH = 10_000  # tokens generated per call
MAX_SAMPLES = 1_000
MAX_TEMPERATURE = 100.0
MAX_K = 20  # suggestions per request
MAX_SEED = 2**63 - 1


@dataclass
class DataConfig(Settings):
    """Where the text comes from and how it becomes tokens."""

    path: str | None = setting(None, "a text file (or None when `dataset` names one)", cli=False)
    dataset: str | None = setting(None, "a named dataset (see `rnnlab datasets`)", cli=False)
    preset: str = setting("raw", "raw: every character; letters: the book's a-z + space", choices=PRESETS)
    token: str = setting("char", "tokens are characters or whitespace-separated words", choices=TOKENS)
    max_tokens: int = setting(0, "keep the first N tokens (0 = all; the book uses 10000)", min=0)
    encoding: str = setting("utf-8", "text encoding of the file (a Python codec name)")
    errors: str = setting("strict", "undecodable bytes: stop with an error, or replace them with U+FFFD",
                          choices=("strict", "replace"))
    min_freq: int = setting(0, "tokens seen fewer times become <unk>", min=0)
    val_fraction: float = setting(0.0, "hold out the last fraction of the stream as the test split: scored at the "
                                       "end and by `rnnlab eval`, never used for a decision (0 = none, the book's "
                                       "setting)", min=0.0, max=0.9)
    select_fraction: float = setting(0.0, "the fraction at the start of the stream that chooses the best weights, "
                                          "early stopping and the final decay (0 = none)",
                                     min=0.0, max=0.5)
    prepared: str | None = setting(None, "a directory written by `rnnlab prepare` (memory-mapped ids)",
                                   cli=False)
    chat: str | None = setting(None, "read FILE (a file, .zip or folder) as a chat export: one message a line, "
                                     "without timestamps, names, system lines or media. FORMAT: auto (detect it), "
                                     "whatsapp, telegram, messenger, discord, slack, or text (each line of a plain "
                                     "file is a message)", choices=CHAT_FORMATS, metavar="FORMAT")
    speaker: list[str] = setting(help="with --chat: keep only this sender's messages (repeatable; `rnnlab chats "
                                      "FILE` lists the senders)", factory=list, metavar="NAME")

    def check(self) -> None:
        if self.path is not None and self.dataset is not None:
            raise UsageError("give either a text FILE or --dataset NAME, not both")
        if self.prepared is not None and (self.path is not None or self.dataset is not None):
            raise UsageError("give --prepared DIR or a text FILE / --dataset NAME, not both")
        if self.path == "":
            raise UsageError("the text FILE is an empty path; give a file name")
        if self.speaker and self.chat is None:
            raise UsageError("--speaker chooses senders of a chat export; add --chat auto (or the format)")
        if self.chat is not None and self.path is None:
            raise UsageError("--chat reads a chat export FILE; give the file (not --dataset or --prepared)")
        if self.val_fraction + self.select_fraction > 0.9:
            raise UsageError(f"--val-fraction {self.val_fraction:g} and --select-fraction {self.select_fraction:g} "
                             f"leave less than a tenth of the text for training; lower them")


@dataclass
class TrainConfig(Settings):
    """How to optimise: batching, optimiser, learning-rate schedule, clipping, the seed."""

    batch_size: int = setting(32, "minibatch rows; under torchrun the global batch, split over the processes",
                              min=1, max=1 << 16)
    num_steps: int = setting(35, "time steps per minibatch (BPTT length)", min=1, max=1 << 16)
    sampling: str = setting("sequential", "sequential: state carried between minibatches; random: random "
                                          "windows, state reset", choices=SAMPLINGS)
    optimizer: str = setting("sgd", "the optimiser", choices=OPTIMIZERS)
    lr: float = setting(1.0, "learning rate", above=0.0, max=1e4)
    momentum: float = setting(0.0, "SGD momentum", min=0.0, max=0.999)
    weight_decay: float = setting(0.0, "weight decay (L2 for SGD/Adam/RMSprop, decoupled for AdamW)", min=0.0, max=10.0)
    lr_schedule: str = setting("constant", "cosine: decay to --min-lr over the run (over --max-seconds when set)",
                               choices=SCHEDULES)
    min_lr: float = setting(0.0, "the learning rate the cosine schedule ends at", min=0.0, max=1e4)
    warmup_steps: int = setting(0, "linear learning-rate warm-up steps", min=0, max=1 << 30)
    clip_norm: float = setting(1.0, "clip gradients to this global norm (0 = off)", min=0.0, max=1e6)
    seed: int = setting(0, "one seed for Python, NumPy and torch", min=0, max=MAX_SEED)

    def check(self) -> None:
        if self.momentum and self.optimizer != "sgd":
            raise UsageError("--momentum applies to --optimizer sgd only")
        if self.lr_schedule == "cosine" and self.min_lr > self.lr:
            raise UsageError(f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}; the cosine schedule decays "
                             f"from --lr down to --min-lr")


def parse_duration(text: str) -> float:
    """Seconds in "90s", "10m", "2h", "1h30m" or a plain number of seconds; a ``UsageError`` otherwise."""
    import re

    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|s)", t)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != t.replace(" ", ""):
        raise UsageError(f"--budget {text!r} is not a duration; write it like 90s, 10m, 2h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass
class Precision(Settings):
    """The number format of the model's arithmetic, one setting for every command (``--precision``).

    ``bf16`` runs the products in bfloat16 (``torch.autocast``) while the weights, the optimizer
    state, the loss and every checkpoint stay float32, so a model trained in either loads and runs
    anywhere; ``auto`` picks bf16 only where a short measurement of the work itself shows it faster
    by a margin (``rnnlab.precision``). Training stores the precision it chose in the run's
    ``RunConfig`` (a ``Precision``), so ``--resume`` continues in it."""

    precision: str = setting("fp32", "fp32; bf16: bfloat16 products with float32 weights, optimizer state and "
                                     "checkpoints; auto: bf16 where this machine measures the work faster in it by a "
                                     "margin (train: its step, before the run starts; eval: a forward pass; generate, "
                                     "suggest, serve: one-token steps), else fp32", choices=PRECISIONS)


@dataclass
class Device(Settings):
    """Where the model runs, one setting for every command (``--device``)."""

    device: str = setting("auto", DEVICE_HELP)

    def torch_device(self):
        """The ``torch.device`` to run on (``runtime.select_device``: the one place ``auto`` is resolved)."""
        from .runtime import select_device

        return select_device(self.device)


@dataclass
class InferenceConfig(Precision, Device):
    """How a trained model is run (``generate``, ``suggest``, ``serve``, ``eval``): the device, the
    number format, or its int8 CPU copy. ``torch_device`` holds the one rule between them: ``auto``
    under ``int8`` is the CPU, the int8 copy's only device."""

    int8: bool = setting(False, "run an int8 copy of the model on the CPU (about 4x less memory; not with "
                                "--precision bf16)")

    def check(self) -> None:
        super().check()
        if self.int8 and self.precision == "bf16":
            raise UsageError("--int8 and --precision bf16 are two different copies of the model; give one of them")
        if self.int8 and self.device.split(":")[0] not in ("auto", "cpu"):
            raise UsageError(f"--int8 runs on the CPU; drop --device {self.device} (or --int8)")

    def torch_device(self):
        """The ``torch.device`` to load the model on: the CPU for ``int8`` (``check`` refused any other)."""
        return Device("cpu").torch_device() if self.int8 else super().torch_device()


@dataclass
class RunConfig(Precision, Device):
    """How long and how to run a training: may change when a run is resumed. Its ``precision``
    (``Precision``) is the one the run trains in: ``auto`` is decided once, before training, and
    the decision is what a checkpoint stores."""

    recipe: str = setting("default", "default: the best model for the time given (--budget), with validation, "
                                     "early stopping and a model sized to the budget and the text; book: the book's "
                                     "settings (the other fields' defaults), exactly as configured. Explicit flags "
                                     "always win",
                          choices=("default", "book"))
    epochs: int = setting(500, "epochs to train (the book: 500)", min=1, max=1 << 30)
    budget: float = setting(0.0, "time budget (90s, 10m, 2h): the learning-rate schedule spans it and training "
                                 "stops when it is spent (0 = none: the schedule spans --epochs)",
                            min=0.0, max=1e7, parse=parse_duration, metavar="TIME")
    remeasure: bool = setting(False, "the default recipe: measure this machine's training speed again instead of "
                                     "using the rates remembered from an earlier run (they keep one command's "
                                     "model the same from run to run)")
    max_seconds: float = setting(0.0, "stop after this much wall time, whatever the schedule (0 = no limit)",
                                 min=0.0, max=1e8)
    eval_every: float = setting(0.0, "also evaluate every this many seconds of training, not only at epoch ends "
                                     "(0 = epoch ends only)", min=0.0, max=1e7)
    eval_tokens: int = setting(0, "score at most this many tokens of the validation split at each evaluation "
                                  "(0 = all of it)", min=0)
    patience: int = setting(0, "stop after this many evaluations without a better validation loss (0 = never)",
                            min=0, max=1 << 20)
    restore_best: bool = setting(False, "end with the weights of the best validation loss (they are kept in "
                                        "OUT/best either way)")
    predict_every: int = setting(50, "greedy samples every N epochs (0 = never)", min=0)
    prefixes: list[str] = setting(help="prefixes for progress samples (default: the dataset's)", factory=list,
                                  cli=False)
    predict_length: int = setting(50, "tokens per progress sample", min=0, max=MAX_LENGTH)
    save_every: int = setting(0, "checkpoint every N epochs (0 = about ten per run)", min=0)
    save_seconds: float = setting(300.0, "also snapshot every N seconds of training, inside epochs too, and at every "
                                         "evaluation point, so a killed run resumes from there (0 = epoch ends only)",
                                  min=0.0, max=1e8)
    keep: int = setting(2, "snapshots kept in OUT/checkpoints (plus OUT/best)", min=1, max=1000)
    log_every: int = setting(10, "print a metrics line every N epochs", min=1)
    init_from: str | None = setting(None, "fine-tune: start from this trained checkpoint's weights and vocabulary",
                                    metavar="DIR")
    extend_vocab: bool = setting(False, "with --init-from: add the text's characters the base model never saw as "
                                        "new tokens (default: read them as <unk>)")

    def check(self) -> None:
        super().check()
        if self.init_from is not None and not self.init_from.strip():
            raise UsageError("--init-from is an empty path; give the --out DIR of a trained run (or drop the flag)")
        if self.extend_vocab and not self.init_from:
            raise UsageError("--extend-vocab applies to fine-tuning only; give --init-from DIR")


@dataclass
class GenerateConfig(Settings):
    """How to continue a prompt (the CLI's `generate`, the library's `generate_text`, the server)."""

    length: int = setting(100, "tokens to generate", min=0, max=MAX_LENGTH)
    temperature: float = setting(0.0, "0 = greedy (the book); > 0 samples from softmax(logits / T)",
                                 min=0.0, max=MAX_TEMPERATURE)
    top_k: int = setting(0, "sample among the k most likely tokens (0 = all)", min=0, max=1 << 24)
    top_p: float = setting(1.0, "nucleus sampling: the smallest set of tokens with this probability mass",
                           above=0.0, max=1.0)
    num_samples: int = setting(1, "independent continuations, generated as one batch", min=1, max=MAX_SAMPLES)
    seed: int | None = setting(None, "seed for sampling (same seed, same text)", min=0, max=MAX_SEED)
    strict: bool = setting(False, "error on prompt characters the model has never seen (else they read as <unk>)")


@dataclass
class SuggestConfig(Settings):
    """How the keyboard answers: how many suggestions, and the bounds of its completion search."""

    k: int = setting(5, "how many next characters and completions", min=1, max=MAX_K)
    beam_width: int = setting(8, "open beams kept by the completion search (the word search keeps at most twice "
                                 "the beam's candidates)", min=1, max=64)
    max_word_length: int = setting(24, "longest completion searched, in characters", min=1, max=64)
    words: str = setting("on", "on: the word search (the checkpoint's lexicon, word n-gram and the client's recent "
                               "words, scored by the model and mixed), when the checkpoint has a word model; off: "
                               "the character beam alone", choices=("on", "off"))
    recent_words: int = setting(500, "the word search's cache: recent words kept per client (0 = off)", min=0,
                                max=100_000)


@dataclass
class AdaptConfig(Settings):
    """Adaptation (``rnnlab.adaptation``): a copy of the model takes a gradient step after each chunk
    of the text it reads. ``rnnlab eval --dynamic`` (``--dynamic-*`` flags: dynamic evaluation of a
    text) and ``rnnlab serve --adapt`` (``--adapt-*``: each client's own copy learns what it types)."""

    method: str = setting("rms", "rms: steps scaled by the training text's gradient RMS (Krause et al.; without "
                                 "the training text: plain SGD steps at lr 0.1); sgd: plain steps",
                          choices=("rms", "sgd"))
    lr: float = setting(2e-4, "step size of the adaptation", above=0.0, max=10.0)
    chunk: int = setting(20, "tokens read (and scored) before each step; the keyboard reads only finished words",
                         min=1, max=10_000)
    clients: int = setting(8, "serve: clients adapted at once (each holds one copy of the model's weights; the least "
                              "recently seen is dropped)", min=1, max=1024)


@dataclass
class ServeConfig(Settings):
    """The server (``rnnlab serve``, ``rnnlab.serve.create_app``): where it listens, what one
    connection or request may take, and where the work runs."""

    host: str = setting("127.0.0.1", "address to bind (the default serves this machine only)")
    port: int = setting(8000, "TCP port (0 = any free port)", min=0, max=65535)
    allowed_host: list[str] = setting(help="a Host header to accept besides the bound address and localhost "
                                           "(repeatable; '*' accepts any: only behind a proxy that checks it)",
                                      factory=list, metavar="HOST")
    max_body_bytes: int = setting(64 * 1024, "larger request bodies get 413 (the default holds the longest text, "
                                             "fully \\u-escaped)", min=1024, max=1 << 30)
    max_batch: int = setting(64, "most suggest requests answered together (1 = one at a time, no batching)",
                             min=1, max=4096)
    read_timeout: float = setting(10.0, "seconds a client has to send a request's line and headers, and again its "
                                        "body; slower connections get 408 and are closed", above=0.0, max=3600.0)
    generate_workers: int = setting(2, "generations computed at once (each on a thread of its own)", min=1, max=256)
    generate_queue: int = setting(32, "generations waiting for a worker; more get 503 with Retry-After",
                                  min=0, max=100_000)
    suggest_worker: str = setting("process", "where suggestions are computed: a process of their own (the search "
                                             "and the HTTP event loop run on two cores) or a thread of the server "
                                             "(they share one GIL)", choices=("process", "thread"))
    suggest_hang_seconds: float = setting(60.0, "a suggestion process that answers nothing this long while requests "
                                                "wait is hung: it is killed and restarted (those requests get 503)",
                                          min=0.5, max=86400.0)
    cache_clients: int = setting(256, "clients whose recent states the suggestion cache keeps", min=1, max=1 << 20)
    cache_per_client: int = setting(16, "texts per client whose states the suggestion cache keeps", min=1,
                                    max=1 << 16)
    fast_path: bool = setting(True, "answer valid suggest requests before the web framework", cli=False)
    log_level: str = setting("warning", "the HTTP server's log level",
                             choices=("critical", "error", "warning", "info", "debug"))


@dataclass
class Threads(Settings):
    """How many threads torch uses: one setting for every command (``--threads``)."""

    threads: int = setting(0, "torch threads (0: the command chooses: 1 for work in one-token steps, i.e. suggest, "
                              "serve, eval --keyboard and generate of one sample, else torch's default)",
                           min=0, max=1024)


@dataclass
class KeyboardEval(Settings):
    """The keyboard simulation (``rnnlab eval --keyboard``): what is typed and how it is reported."""

    words: int = setting(3000, "type only the first N words of the test split (0: all of it)", min=0,
                         max=100_000_000)
    preamble: int = setting(2000, "characters of text before each concurrently typed piece given as its context "
                                  "(at most half of what a keyboard request may hold)",
                            min=0, max=MAX_TEXT_CHARS // 2)
    presage: str = setting("auto", "auto: also measure Presage trained on the same training split when it is "
                                   "installed (apt-get install presage); off: skip it", choices=("auto", "off"))
    bootstrap: int = setting(1000, "bootstrap resamples of the words for the ratios' 95 percent intervals (0: none)",
                             min=0, max=100_000)
    latency_queries: int = setting(200, "queries of one typist timed one at a time for the latency row", min=0,
                                   max=100_000)


@dataclass
class WordsConfig(Settings):
    """The keyboard's word model (``rnnlab words DIR``; ``rnnlab train`` builds it at the end): the
    training split's lexicon and word n-gram, and the word search's settings tuned on the selection slice."""

    order: int = setting(3, "the word n-gram's order (Kneser-Ney smoothed)", min=1, max=3)
    tune_words: int = setting(1500, "tune on at most this many words of the selection slice (0: keep the defaults)",
                              min=0, max=10_000_000)
    tune_seconds: float = setting(60.0, "stop typing the tuning text after this many seconds", min=1.0, max=1e6)


def check_text(text: str, what: str = "the text") -> str:
    """A prompt or typed text: at most ``MAX_TEXT_CHARS`` characters of valid Unicode."""
    if not isinstance(text, str):
        raise UsageError(f"{what} must be text")
    if len(text) > MAX_TEXT_CHARS:
        raise UsageError(f"{what} has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid Unicode (a lone surrogate); send UTF-8 text") from None
    return text


__all__ = ["AdaptConfig", "DataConfig", "Device", "GenerateConfig", "InferenceConfig", "ModelConfig", "Precision",
           "RunConfig", "ServeConfig", "SuggestConfig", "Threads", "TrainConfig", "WordsConfig", "check_text"]
