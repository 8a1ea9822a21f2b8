"""``rnnlab eval DIR --keyboard``: rnnlab's keyboard as it is served, the fair n-gram keyboard and
Presage, typing the same text in one run.

What is typed, and what the baselines are built from (they know what the model knows):

* no text given, or the run's own corpus: the run's test split (the last ``--val-fraction`` of its
  corpus, ``split_points``), with everything before it as the history; the baselines are built
  from the training split only (the selection slice is neither typed nor learnt from);
* any other text (a user's own writing): all of it, from its first character, with the baselines
  built from the run's training split.

Keyboards: ``rnnlab`` (``suggest.load_engine``: the word search with the checkpoint's word model
and tuned settings, as ``rnnlab suggest``/``serve`` answer), ``ngram`` (``ngram.NgramKeyboard``: the
same word model, recent-word cache, mixing and drop-typed rule without the character model, with
its own tuned settings) and ``presage`` (``presage.PresageKeyboard`` on the same training split;
skipped with a one-line note when it is not installed). Ratios rnnlab / each baseline with
bootstrap 95% intervals over the words (``stats``), and each keyboard's latency: one typist's
queries answered one at a time (median and 95th percentile, milliseconds).

Only character models type: a word-level model has no partial words to complete.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from ..checkpoint import load_for_inference
from ..config import DataConfig, KeyboardEval, SuggestConfig
from ..data.text_data import split_points
from ..errors import UsageError
from ..suggest import Words, WordModel, load_engine, word_spans
from . import presage
from .ngram import BASELINE, NgramKeyboard
from .simulate import DEFAULT_KS, RnnlabKeyboard, evaluate_keyboard, ratios
from .stats import bootstrap_ratios
from .tune import model_text


def keyboard_texts(own: DataConfig, given: DataConfig | None,
                   log: Callable[[str], None] = lambda m: None) -> tuple[str, str, str, str]:
    """(training split, typed text, history before it, what is typed) by the module's rules (the
    run's own chat export read with other ``--chat``/``--speaker`` settings is another text)."""
    if own.prepared is not None:
        raise UsageError("this run was trained on a prepared corpus; the keyboard measurement needs its text "
                         "(train on the text file)")
    same = given is None or (given.dataset is not None and given.dataset == own.dataset) or (
        given.path is not None and own.path is not None and Path(given.path).resolve() == Path(own.path).resolve()
        and (given.chat is None or (given.chat, given.speaker) == (own.chat, own.speaker)))
    text = model_text(own, log)
    s, b = split_points(len(text), own.val_fraction, own.select_fraction)
    source = own.path or own.dataset
    if same:
        if b >= len(text):
            raise UsageError(f"the run was trained on all of {source} (no --val-fraction), so nothing of it is "
                             f"held out for the keyboard to type; give another FILE or --dataset")
        return text[s:b], text[b:], text[:b], f"the test split (last {own.val_fraction:g}) of {source}"
    typed = model_text(dataclasses.replace(given, preset=own.preset, token="char", max_tokens=0, val_fraction=0.0,
                                           select_fraction=0.0), log)
    return text[s:b], typed, "", str(given.path or given.dataset)


def latency(keyboard, text: str, history: str, queries: int, k: int) -> dict[str, float] | None:
    """One typist's first ``queries`` queries of ``text``, each answered alone: median and p95 in ms."""
    times: list[float] = []
    full = history + text
    for s, e in word_spans(text):
        for i in range(e - s):
            if len(times) >= queries:
                break
            start = len(history) + s
            t0 = time.perf_counter()
            keyboard.completions_batch([(full[max(0, start - 2000):start], full[start:start + i])], k, ["latency"])
            times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= queries:
            break
    if not times:
        return None
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
            "queries": len(times)}


def evaluate_keyboards(ckpt_dir: str | Path, given: DataConfig | None = None, settings: KeyboardEval | None = None,
                       device: str = "cpu", log: Callable[[str], None] = lambda m: None,
                       int8: bool = False, precision: str = "fp32") -> dict[str, Any]:
    """Every keyboard typing the same text: ``{"source", "keyboards": {name: figures}, "ratios":
    {"rnnlab / ngram": ..., "rnnlab / presage": ...}, "intervals": {same keys: bootstrap}, "notes"}``.
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
    notes: list[str] = []
    rnnlab = RnnlabKeyboard(load_engine(ck, SuggestConfig(), log=lambda m: notes.append(m)))
    words = rnnlab.engine.words
    if words is None:
        words = Words(WordModel.from_text(train), baseline=BASELINE)
        notes.append("keyboard: the fair n-gram keyboard uses an untuned word model built now from the training split")
    keyboards: list[Any] = [rnnlab, NgramKeyboard(words)]
    if settings.presage == "auto":
        why = presage.unavailable()
        if why is None:
            keyboards.append(presage.PresageKeyboard(train))
        else:
            notes.append(f"keyboard: Presage skipped: {why}")
    for n in notes:
        log(n)
    shown = f", first {settings.words:,} words" if settings.words else ""
    log(f"keyboard: typing {source} ({len(typed):,} characters{shown}); baselines from the {len(train):,}-character "
        f"training split ({len(words.model):,} words)")
    results: dict[str, Any] = {}
    try:
        for kb in keyboards:
            r = evaluate_keyboard(kb, typed, DEFAULT_KS, history=history, max_words=settings.words or None,
                                  preamble_chars=settings.preamble, record=True)
            r["latency"] = latency(kb, typed, history, settings.latency_queries, max(DEFAULT_KS))
            results[kb.name] = r
            log(f"keyboard: {kb.name} done in {r['seconds']:.1f} s")
    finally:
        for kb in keyboards:
            if hasattr(kb, "close"):
                kb.close()
    base = [n for n in results if n != "rnnlab"]
    report = {"source": source, "keyboards": results, "notes": notes,
              "ratios": {f"rnnlab / {n}": ratios(results["rnnlab"], results[n]) for n in base},
              "intervals": {f"rnnlab / {n}": bootstrap_ratios(results["rnnlab"], results[n], settings.bootstrap)
                            for n in base} if settings.bootstrap else {},
              "settings": {"served": words.params.to_dict() if rnnlab.engine.words else None,
                           "ngram": words.baseline.to_dict(), "tuning": words.meta.get("tuning")}}
    for r in results.values():  # the per-word records served the intervals; the report keeps the figures
        for key in ("details", "separators_before", "trailing"):
            r.pop(key, None)
    return report


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(report: dict[str, Any]) -> str:
    """The figures as a Markdown table: one column per keyboard, then rnnlab over each baseline
    (with its bootstrap 95% interval where there is one)."""
    results, rat, ci = report["keyboards"], report["ratios"], report.get("intervals", {})
    names, others = list(results), list(rat)
    first = results[names[0]]
    ks = list(first["ksr"])
    rows: list[tuple[str, Callable, Callable | None]] = [
        (f"keystroke savings @{k}", lambda r, k=k: r["ksr"][k], lambda c, k=k: c["ksr"].get(k)) for k in ks]
    rows += [(f"keystrokes/char @{k}", lambda r, k=k: r["keystrokes_per_char"][k], None) for k in ks]
    rows += [("next-word top-1", lambda r: r["next_word_top1"], lambda c: c["next_word_top1"]),
             ("next-word top-3", lambda r: r["next_word_top3"], None)]
    rows += [(f"completion recall@{first['recall_k']} after {n} chars", lambda r, n=n: r["completion_recall"][n], None)
             for n in first["completion_recall"]]
    out = ["| | " + " | ".join(names) + " | " + " | ".join(others) + " |",
           "|---|" + "---|" * (len(names) + len(others))]
    for label, get, get_ci in rows:
        cells = []
        for n in others:
            cell = _fmt(get(rat[n]))
            iv = get_ci(ci[n]) if get_ci is not None and n in ci else None
            cells.append(cell + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""))
        out.append(f"| {label} | " + " | ".join(_fmt(get(r)) for r in results.values()) + " | " + " | ".join(cells) + " |")
    lat = [r.get("latency") for r in results.values()]
    out.append("| ms per query, one typist (p50 / p95) | " + " | ".join(
        f"{x['p50_ms']:.2f} / {x['p95_ms']:.2f}" if x else "-" for x in lat) + " |" + " |" * len(others))
    out.append("| seconds (whole run) | " + " | ".join(f"{r['seconds']:.1f}" for r in results.values()) + " |"
               + " |" * len(others))
    out.append("| queries | " + " | ".join(str(r["queries"]) for r in results.values()) + " |" + " |" * len(others))
    return "\n".join(out)


__all__ = ["evaluate_keyboards", "keyboard_texts", "latency", "table"]
