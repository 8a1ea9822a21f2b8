"""``rnnlab eval DIR --keyboard``: rnnlab's keyboards against the word bigram on one text.

What is typed, and what the bigram is built from (it knows what the model knows):

* no text given: the run's own validation split (the last ``--val-fraction`` of its corpus), with
  its training part as the history before it and as the bigram's training text;
* a FILE or ``--dataset`` that is the run's own corpus: the same;
* any other text (a user's own writing): all of it, from its first character, with the bigram
  built from the run's training text.

Only character models type: a word-level model has no partial words to complete.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from ..checkpoint import load_for_inference
from ..config import DataConfig, KeyboardEval, SuggestConfig
from ..data.corpus import load_corpus
from ..data.text_data import resolve_source
from ..errors import UsageError
from ..suggest import SuggestEngine, word_spans
from .mix import MixKeyboard
from .ngram import BigramKeyboard
from .simulate import DEFAULT_KS, RnnlabKeyboard, evaluate_keyboard, ratios, split_heldout

OOV_FACTOR = 0.25  # words outside the training lexicon: shown non-words were right 3-4x less often


def _text(cfg: DataConfig, log: Callable[[str], None] = lambda m: None) -> str:
    """The corpus text as the model saw it (preset applied, ``max_tokens`` cut; a chat export's
    messages with ``cfg.chat``)."""
    corpus = load_corpus(resolve_source(cfg), cfg.preset, "char", cfg.encoding, cfg.errors, cfg.chat, cfg.speaker)
    if corpus.chat is not None:
        log(corpus.chat.report.describe())
    tokens = corpus.tokens[:cfg.max_tokens] if cfg.max_tokens else corpus.tokens
    return "".join(tokens)


def keyboard_texts(own: DataConfig, given: DataConfig | None,
                   log: Callable[[str], None] = lambda m: None) -> tuple[str, str, str, str]:
    """(bigram training text, typed text, history before it, what is typed) by the module's rules
    (the run's own chat export read with other ``--chat``/``--speaker`` settings is another text)."""
    if own.prepared is not None:
        raise UsageError("this run was trained on a prepared corpus; give a FILE or --dataset for the keyboard "
                         "to type, and the bigram is built from it")
    same = given is None or (given.dataset is not None and given.dataset == own.dataset) or (
        given.path is not None and own.path is not None and Path(given.path).resolve() == Path(own.path).resolve()
        and (given.chat is None or (given.chat, given.speaker) == (own.chat, own.speaker)))
    train, held = split_heldout(_text(own, log), own.val_fraction)
    source = own.path or own.dataset
    if same:
        if not held:
            raise UsageError(f"the run was trained on all of {source} (no --val-fraction), so nothing of it is "
                             f"held out for the keyboard to type; give another FILE or --dataset")
        return train, held, train, f"the held-out {own.val_fraction:g} of {source}"
    typed = _text(dataclasses.replace(given, preset=own.preset, token="char", max_tokens=0, val_fraction=0.0), log)
    return train, typed, "", str(given.path or given.dataset)


def evaluate_keyboards(ckpt_dir: str | Path, given: DataConfig | None = None, settings: KeyboardEval | None = None,
                       device: str = "cpu", log: Callable[[str], None] = lambda m: None,
                       int8: bool = False, precision: str = "fp32") -> dict[str, Any]:
    """rnnlab's engine, its word re-ranker (unless ``settings.mix`` is off) and the word bigram, each
    typing the same text: ``{"source", "keyboards": {name: figures}, "ratios": {name: over bigram}}``.
    ``int8``: the model's int8 CPU copy, ``precision`` bf16 its bfloat16 copy (``checkpoint.load_for_inference``)."""
    settings = settings or KeyboardEval()
    settings.validate()
    ck = load_for_inference(ckpt_dir, device, int8, precision, log=log)
    if ck.tokenizer.word_level:
        raise UsageError(f"{ckpt_dir} is a word-level model; the keyboard simulation types characters "
                         f"(train with --token char)")
    train, typed, history, source = keyboard_texts(ck.data_config, given, log)
    if not word_spans(typed):
        raise UsageError(f"{source} has no words to type (a word is a run of letters or digits); give a text with "
                         f"words")
    bigram = BigramKeyboard.from_text(train)
    log(f"keyboard: typing {source} ({len(typed):,} characters{', first ' + format(settings.words, ',') + ' words' if settings.words else ''}); "
        f"bigram from {len(train):,} training characters ({len(bigram.model.vocab):,} words)")
    keyboards: list[Any] = [RnnlabKeyboard(SuggestEngine(ck.model, ck.tokenizer, SuggestConfig()))]
    weights = settings.weights()
    if weights is not None:  # its own engine and state cache, so that each column is measured alone
        engine = SuggestEngine(ck.model, ck.tokenizer, SuggestConfig())
        keyboards.append(MixKeyboard(RnnlabKeyboard(engine), bigram.model, weights, oov_factor=OOV_FACTOR,
                                     name="rnnlab+words"))
    keyboards.append(bigram)
    results: dict[str, Any] = {}
    try:
        for kb in keyboards:
            results[kb.name] = evaluate_keyboard(kb, typed, DEFAULT_KS, history=history,
                                                 max_words=settings.words or None,
                                                 preamble_chars=settings.preamble)
            log(f"keyboard: {kb.name} done in {results[kb.name]['seconds']:.1f} s")
    finally:
        for kb in keyboards:
            if hasattr(kb, "close"):
                kb.close()
    return {"source": source, "keyboards": results,
            "ratios": {n: ratios(r, results["bigram"]) for n, r in results.items() if n != "bigram"}}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(report: dict[str, Any]) -> str:
    """The figures as a Markdown table: one column per keyboard, then each over the bigram's."""
    results, rat = report["keyboards"], report["ratios"]
    names, others = list(results), list(rat)
    first = results[names[0]]
    rows: list[tuple[str, Callable]] = [(f"keystroke savings @{k}", lambda r, k=k: r["ksr"][k]) for k in first["ksr"]]
    rows += [(f"keystrokes/char @{k}", lambda r, k=k: r["keystrokes_per_char"][k]) for k in first["ksr"]]
    rows += [("next-word top-1", lambda r: r["next_word_top1"]), ("next-word top-3", lambda r: r["next_word_top3"])]
    rows += [(f"completion recall@{first['recall_k']} after {n} chars", lambda r, n=n: r["completion_recall"][n])
             for n in first["completion_recall"]]
    out = ["| | " + " | ".join(names) + " | " + " | ".join(f"{n} / bigram" for n in others) + " |",
           "|---|" + "---|" * (len(names) + len(others))]
    for label, get in rows:
        out.append(f"| {label} | " + " | ".join(_fmt(get(r)) for r in results.values()) + " | "
                   + " | ".join(_fmt(get(rat[n])) for n in others) + " |")
    out.append("| seconds | " + " | ".join(f"{r['seconds']:.1f}" for r in results.values()) + " |" + " |" * len(others))
    out.append("| queries | " + " | ".join(str(r["queries"]) for r in results.values()) + " |" + " |" * len(others))
    return "\n".join(out)
