"""The keyboard measurement (rnnlab.keyboard): the simulated typist with hand-counted keystrokes, the
fair n-gram keyboard, Presage on a hand-checked case, the bootstrap intervals, the leakage guards (no
keyboard reads what the user has not typed, nor the held-out text when it is built or tuned), the
tuning, and `rnnlab eval --keyboard` / `rnnlab words` end to end."""
from guards import HANG_GUARD
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from tiny_keyboard_model import CORPUS, SELECT_PART, SPLIT_CORPUS, TEST_PART, split_checkpoint, tiny_checkpoint

from rnnlab.keyboard import (
    BASELINE,
    FixedKeyboard,
    Keyboard,
    NgramKeyboard,
    RnnlabKeyboard,
    compare,
    evaluate_keyboard,
)
from rnnlab.keyboard import presage
from rnnlab.keyboard.stats import bootstrap_ratios, word_units
from rnnlab.suggest import MixParams, WordModel, word_spans, words_of

# -- words ------------------------------------------------------------------------------------------

def test_words_follow_the_suggestion_rules():
    text = "'Tis don't,  dogs' rock'n'roll\n3rd x''y -- ’twas o’clock"
    assert words_of(text) == ["Tis", "don't", "dogs", "rock'n'roll", "3rd", "x", "y", "twas", "o’clock"]
    assert word_spans("ab, c") == [(0, 2), (4, 5)]
    assert words_of("...!") == [] and words_of("") == []


def _spans_by_rule(text):
    """The rule spelled out character by character: a word starts at a letter or digit
    (``str.isalnum``) and goes on over letters, digits and apostrophes followed by one."""
    spans, i, n = [], 0, len(text)
    while i < n:
        if text[i].isalnum():
            j = i + 1
            while j < n and (text[j].isalnum() or (text[j] in "'’" and j + 1 < n and text[j + 1].isalnum())):
                j += 1
            spans.append((i, j))
            i = j
        else:
            i += 1
    return spans


def test_word_spans_are_the_rule_on_any_text():
    import random

    rng = random.Random(0)
    alphabet = "ab Z9_'’-\n\t.,é\u0301ß日本😀Ⅻ²٣\u00a0"  # letters, digits, underscore, apostrophes, marks, CJK, emoji, numerals
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        assert word_spans(text) == _spans_by_rule(text), repr(text)
    everything = "".join(map(chr, range(0x3000))) + "".join(map(chr, range(0x1F300, 0x1F400)))
    assert word_spans(everything) == _spans_by_rule(everything)


# -- the protocol, counted by hand ------------------------------------------------------------------

def _table(answers):
    return FixedKeyboard(lambda context, partial: answers.get((context, partial), []))


def test_keystrokes_counted_by_hand():
    # "the cat sat": 11 characters, 2 separators (spaces), always typed
    kb = _table({
        ("", ""): ["a", "the"],            # "the" ranks 2nd before its first letter
        ("", "t"): ["the"],                # ... 1st after "t"
        ("", "th"): ["the"],
        ("the ", ""): ["dog", "cow", "pig", "cat"],  # "cat" ranks 4th
        ("the ", "c"): ["cow", "cat"],     # 2nd after "c"
        ("the ", "ca"): ["cat"],           # 1st after "ca"
        ("the cat ", "sa"): ["sad"],       # "sat" is never shown
    })
    r = evaluate_keyboard(kb, "the cat sat", ks=(1, 3, 5))
    # k=1: the = t + accept (2), cat = c a + accept (3), sat = s a t (3), spaces 2 -> 10
    # k=3: the = accept (1), cat = c + accept (2), sat 3, spaces 2 -> 8
    # k=5: the = accept (1), cat = accept (1), sat 3, spaces 2 -> 7
    assert r["keystrokes"] == {1: 10, 3: 8, 5: 7}
    assert r["characters"] == 11 and r["words"] == 3 and r["separator_chars"] == 2 and r["word_chars"] == 9
    assert r["ksr"] == {1: pytest.approx(1 / 11), 3: pytest.approx(3 / 11), 5: pytest.approx(4 / 11)}
    assert r["keystrokes_per_char"][3] == pytest.approx(8 / 11)
    assert r["next_word_top1"] == 0 and r["next_word_top3"] == pytest.approx(1 / 3)  # only "the" (2nd)
    # after 1 char: the (1st), cat (2nd) yes, sat no; after 2: th, ca yes, sa no; no word has > 3 chars
    assert r["completion_recall"] == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3), 3: None}
    assert r["completion_words"] == {1: 3, 2: 3, 3: 0}


def test_separators_apostrophes_and_case():
    # "'Tis  x." -> separators "'", "  ", "." (4 keystrokes always); words "Tis" and "x"
    kb = _table({("'", ""): ["tis", "Tis"]})  # "tis" is not "Tis": the target ranks 2nd
    r = evaluate_keyboard(kb, "'Tis  x.", ks=(1, 3), segments=1)
    # k=1: T i s (3) + x (1) + 4 = 8 -> no saving; k=3: accept (1) + x (1) + 4 = 6
    assert r["keystrokes"] == {1: 8, 3: 6}
    assert r["ksr"][3] == pytest.approx(2 / 8)
    # the keyboard saw each position once, with the context before the word and the typed part
    assert [(c, p) for c, p, _ in kb.calls] == [("'", ""), ("'", "T"), ("'", "Ti"), ("'Tis  ", "")]
    assert {k for _, _, k in kb.calls} == {3}  # one pass asks for max(ks) answers (at least 3, for recall)


def test_one_keystroke_per_word_at_best_and_asking_stops_early():
    kb = FixedKeyboard(lambda context, partial: [w for w in words_of("hello world") if w.startswith(partial)][:1]
                       if not context else ["world"])
    r = evaluate_keyboard(kb, "hello world", ks=(1,), segments=1)
    assert r["keystrokes"] == {1: 1 + 1 + 1}  # accept, space, accept
    # "hello" was top-1 at once, but the recall positions (1, 2, 3 typed characters) are still asked
    assert [p for _, p, _ in kb.calls] == ["", "h", "he", "hel", "", "w", "wo", "wor"]
    assert r["completion_recall"] == {1: 1.0, 2: 1.0, 3: 1.0}
    kb.calls.clear()
    evaluate_keyboard(kb, "hello world", ks=(1,), segments=1, full_scan=True)
    assert [p for _, p, _ in kb.calls] == ["", "h", "he", "hel", "hell", "", "w", "wo", "wor", "worl"]


def test_nothing_suggested_saves_nothing():
    text = "To be, or not to be:\nthat is the question."
    r = evaluate_keyboard(FixedKeyboard(lambda c, p: []), text)
    assert all(v == len(text) for v in r["keystrokes"].values())
    assert r["ksr"] == {1: 0.0, 3: 0.0, 5: 0.0} and r["next_word_top3"] == 0.0


def _reference_keystrokes(keyboard, text, k):
    """The user of the protocol, literally: one k at a time, one keystroke at a time."""
    spans, keys, pos = word_spans(text), 0, 0
    for s, e in spans:
        keys += s - pos  # separators
        for i in range(e - s):
            if text[s:e] in keyboard.completions(text[:s], text[s:s + i], k)[:k]:
                keys += 1
                break
            keys += 1
        pos = e
    return keys + len(text) - pos


def test_one_pass_equals_typing_with_each_k_and_pieces_do_not_matter():
    train = CORPUS * 2 + "we sat at the machine and talked.\n"
    text = "The time traveller smiled, at dinner.\nwe sat in the laboratory and talked about the machine.\n" * 2
    kb = NgramKeyboard.from_text(train, recent_words=0)  # the n-gram alone: answers depend on the context only
    one = evaluate_keyboard(kb, text, ks=(1, 2, 3, 5), segments=1)
    many = evaluate_keyboard(kb, text, ks=(1, 2, 3, 5), segments=5, history="the ")
    assert many["segments"] == 5
    for k in (1, 2, 3, 5):
        assert one["keystrokes"][k] == many["keystrokes"][k] == _reference_keystrokes(kb, text, k)
    assert one["keystrokes"][1] > one["keystrokes"][3] > one["keystrokes"][5]


def test_max_words_types_only_the_first_words():
    r = evaluate_keyboard(FixedKeyboard(lambda c, p: []), "ab cd, ef gh", max_words=2)
    assert r["words"] == 2 and r["characters"] == len("ab cd")


# -- the fair n-gram keyboard ------------------------------------------------------------------------

def test_ngram_keyboard_completes_by_history_and_prefix():
    # a bigram (order 2) and no recent words: after "the", "cat" (twice) then "dog" (once)
    n_gram_only = MixParams(char_weight=0.0, ngram_weight=1.0, cache_weight=0.0, next_char_weight=0.0,
                            next_ngram_weight=1.0, next_cache_weight=0.0, beam_k=0, lexicon_k=5, cache_k=0)
    kb = NgramKeyboard.from_text("the cat sat. The cat ran. the dog sat, the cat sat!", n_gram_only, order=2)
    assert isinstance(kb, Keyboard)
    assert kb.completions("and the ", "", 2) == ["cat", "dog"]
    assert kb.completions("the cat ", "", 2) == ["sat", "ran"]
    assert kb.completions("the cat ", "r", 5) == ["ran"]
    assert kb.completions("", "T", 5) == ["The"]  # case-sensitive prefixes
    assert kb.completions("the ", "cat", 5) == []  # the typed part itself is never shown
    assert kb.completions_batch([("the ", "d"), ("x", "q")], 3) == [["dog"], []]


def test_ngram_keyboard_has_the_same_cache_trick():
    text = "we met the zeppelin crew. later the zeppelin left."
    kb = NgramKeyboard.from_text(CORPUS)  # the default baseline settings: n-gram and recent words
    r = evaluate_keyboard(kb, text, (1, 3), segments=1, record=True)
    ranks = {start: ranks for w, start, ranks in r["details"] if w == "zeppelin"}
    first, second = sorted(ranks)
    assert all(x is None for x in ranks[first])  # never shown before it was typed once...
    assert ranks[second][1] == 0  # ...then the top word after its first letter (the only recent "z" word)


# -- rnnlab's served keyboard, end to end -----------------------------------------------------------------

def test_rnnlab_as_served_against_the_ngram_keyboard_on_the_tiny_model():
    kb = RnnlabKeyboard.from_checkpoint(tiny_checkpoint())
    try:
        assert kb.engine.words is not None  # the checkpoint's word model: the served search
        text = CORPUS[-300:]
        history = CORPUS[:-300]
        # the batched answers are the engine's own answers, one request at a time
        direct = kb.engine.suggest("the time trav", 3).completions
        assert kb.completions("the time ", "trav", 3) == [c.word for c in direct]
        out = compare(kb, NgramKeyboard(kb.engine.words), text, history=history, segments=4)
        a, b = out["rnnlab"], out["baseline"]
        assert a["characters"] == b["characters"] == len(text) and a["words"] == b["words"] == len(words_of(text))
        # the tiny model and the n-gram know these sentences by heart: most words are accepted after a letter
        assert a["ksr"][3] > 0.4 and a["completion_recall"][1] > 0.8
        assert a["ksr"][1] <= a["ksr"][3] <= a["ksr"][5]
        assert out["ratios"]["ksr"][3] == pytest.approx(a["ksr"][3] / b["ksr"][3])
        assert math.isfinite(a["seconds"]) and a["queries"] >= a["words"]
    finally:
        kb.engine.close()


# -- no keyboard reads what it must not ------------------------------------------------------------------

def test_no_keyboard_suggests_a_word_before_the_user_typed_it():
    """The word model, the recent-word cache and the character model only see the text before the
    cursor: a new word is never shown before its first occurrence is typed, and is after it."""
    text = "the zeppelin smiled at the machine. we sat in the garden and the zeppelin talked.\n"
    kb = RnnlabKeyboard.from_checkpoint(tiny_checkpoint())
    try:
        for keyboard in (kb, NgramKeyboard(kb.engine.words)):
            r = evaluate_keyboard(keyboard, text, (1, 3, 5), history=CORPUS[-400:], segments=1, record=True)
            ranks = sorted((start, ranks) for w, start, ranks in r["details"] if w == "zeppelin")
            assert len(ranks) == 2
            # nobody could know it before its first letters (the character model may guess the end of a long word)
            assert ranks[0][1][:2] == [None, None], keyboard.name
            assert ranks[1][1][1] is not None, keyboard.name  # the recent-word cache knows it now, from its "z"
        ranks = [ranks for w, _, ranks in r["details"] if w == "zeppelin"]
        assert all(x is None for x in ranks[0])  # the n-gram keyboard: not at any position
    finally:
        kb.close()


def test_the_word_model_reads_only_the_training_split():
    words = json.loads((split_checkpoint() / "words.json").read_text())
    vocab = set(words["vocab"])
    assert {"traveller", "garden", "machine"} <= vocab
    assert "quagmire" not in vocab  # the selection slice: typed while tuning, never learnt
    assert "zeppelin" not in vocab  # the test split
    s, b = words["built_from"]["range"]
    assert SPLIT_CORPUS.rindex("quagmire") < s and words["tuning"]["range"] == [0, s]
    assert SPLIT_CORPUS.index("zeppelin") >= b


def test_tuning_never_reads_the_reported_text(monkeypatch, tmp_path):
    """The tuner types the selection slice (the start of the text) and nothing of the test split."""
    from rnnlab.checkpoint import load_checkpoint
    from rnnlab.config import WordsConfig
    from rnnlab.data import split_points
    from rnnlab.keyboard import tune

    trained = split_checkpoint()  # (trained first: its own build is not the one watched here)
    seen = []
    record = tune.record

    def spy(engine, text, history, max_words, seconds):
        seen.append((text, history, engine.words.model))
        return record(engine, text, history, max_words, seconds)

    monkeypatch.setattr(tune, "record", spy)
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ck = load_checkpoint(run)
    words = tune.build_words(ck.model, ck.tokenizer, ck.data_config, run, WordsConfig(tune_words=20), log=lambda m: None)
    s, b = split_points(len(SPLIT_CORPUS), ck.data_config.val_fraction, ck.data_config.select_fraction)
    (text, history, model), = seen
    assert text == SPLIT_CORPUS[:s] and history == ""
    assert "zeppelin" not in text + history and "zeppelin" not in model and "quagmire" not in model
    report = words.meta["tuning"]
    assert report["range"] == [0, s] and report["words"] == 20 and "ksr" in report  # 20 words: tuned
    assert json.loads((run / "words.json").read_text())["tuning"]["range"] == [0, s]


def test_eval_keyboard_types_the_test_split_and_builds_its_baselines_from_the_training_split(monkeypatch):
    from rnnlab.keyboard import run as kbrun
    from rnnlab.data import split_points

    trained = []
    if presage.unavailable() is None:
        real = presage.PresageKeyboard

        class Spy(real):
            def __init__(self, train_text, *args, **kwargs):
                trained.append(train_text)
                super().__init__(train_text, *args, **kwargs)

        monkeypatch.setattr(presage, "PresageKeyboard", Spy)
    ck_dir = split_checkpoint()
    report = kbrun.evaluate_keyboards(ck_dir, settings=None)
    dcfg = json.loads((ck_dir / "config.json").read_text())["data"]
    s, b = split_points(len(SPLIT_CORPUS), dcfg["val_fraction"], dcfg["select_fraction"])
    test_words = words_of(SPLIT_CORPUS[b:])
    assert {r["words"] for r in report["keyboards"].values()} == {len(test_words)}
    assert "test split" in report["source"]
    if trained:
        assert trained == [SPLIT_CORPUS[s:b]]
    assert set(report["keyboards"]) == {"rnnlab", "ngram"} | ({"presage"} if trained else set())


# -- the tuning --------------------------------------------------------------------------------------------

def test_the_tuning_predicts_the_served_keystrokes_exactly():
    """Keystrokes computed from the recorded candidates for some settings = those of the engine
    serving with these settings, typing the same text."""
    import dataclasses

    from rnnlab.checkpoint import load_checkpoint
    from rnnlab.suggest import SuggestEngine, Words
    from rnnlab.keyboard.tune import WIDEST, keystrokes, record

    ck = load_checkpoint(tiny_checkpoint())
    model = WordModel.from_text(CORPUS)
    # text the model only partly knows (new words among known ones), so that ranks vary
    text, history = SELECT_PART + TEST_PART + "the garden machine smiled at dinner time.\n", CORPUS
    table, result = record(SuggestEngine(ck.model, ck.tokenizer, words=Words(model)), text, history, 0, 600)
    assert result["complete"] and table.characters == len(text)
    assert len({k for k in keystrokes(table, MixParams()).values()}) == 3  # k = 1, 3, 5 differ: not all top-1
    for params in (MixParams(beam_k=WIDEST.beam_k, lexicon_k=5, cache_k=2),
                   MixParams(char_weight=0.2, ngram_weight=0.7, cache_weight=0.1, next_char_weight=0.6,
                             next_ngram_weight=0.3, next_cache_weight=0.1, oov_factor=0.0, beam_k=10, lexicon_k=3,
                             cache_k=0),
                   MixParams(char_weight=1.0, ngram_weight=0.0, cache_weight=0.0, next_char_weight=1.0,
                             next_ngram_weight=0.0, next_cache_weight=0.0, beam_k=10, lexicon_k=0, cache_k=0),
                   # no character model at word starts: no beam there either
                   MixParams(char_weight=0.5, ngram_weight=0.5, cache_weight=0.0, next_char_weight=0.0,
                             next_ngram_weight=0.1, next_cache_weight=0.9, beam_k=10, lexicon_k=2, cache_k=3),
                   # the recent words alone: many ties, broken by spelling
                   MixParams(char_weight=0.0, ngram_weight=0.0, cache_weight=1.0, next_char_weight=0.0,
                             next_ngram_weight=0.0, next_cache_weight=1.0, beam_k=0, lexicon_k=0, cache_k=10)):
        served = SuggestEngine(ck.model, ck.tokenizer, words=Words(model, params))
        r = evaluate_keyboard(RnnlabKeyboard(served), text, (1, 3, 5), history=history, segments=48,
                              preamble_chars=2000)
        assert keystrokes(table, params) == r["keystrokes"], params


def test_tuned_settings_are_saved_and_printed(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(split_checkpoint(), run)
    r = _cli("words", run, "--tune-words", "30")
    assert r.returncode == 0, r.stderr
    saved = json.loads((run / "words.json").read_text())
    params = MixParams.from_dict(saved["params"])
    assert params.describe() in r.stdout and "tuned on 30 words of the selection slice" in r.stdout
    assert set(saved["tuning"]["ksr"]) == {"1", "3", "5"}
    assert saved["baseline"]["char_weight"] == saved["baseline"]["next_char_weight"] == 0.0


# -- Presage, on a case checked by hand -------------------------------------------------------------------

def test_presage_on_a_hand_checked_case():
    why = presage.unavailable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Presage is missing on CI: {why}", pytrace=False)
        pytest.skip(f"Presage is not installed: {why}")
    kb = presage.PresageKeyboard("the cat sat on the mat. The cat ran. the dog sat, the cat sat!\n")
    try:
        # after "the cat": the trigram (the cat) was followed by "sat" twice and nothing else; the bigram
        # (cat) adds "ran" (after "The cat", case kept); then the recency predictor's words
        assert kb.completions("the cat ", "", 2) == ["sat", "ran"]
        assert kb.completions("the ", "c", 3) == ["cat"]  # the only word that starts with "c"
        assert kb.completions("the ", "cat", 3) == []  # the typed word itself is dropped
        assert kb.completions("zebra and the ", "z", 3) == ["zebra"]  # recency: a word of the text before
        assert kb.completions_batch([("the ", "d"), ("the ", "q")], 3) == [["dog"], []]
    finally:
        kb.close()
    assert not kb.dir.exists()


# -- bootstrap intervals ------------------------------------------------------------------------------------

def test_bootstrap_intervals_resample_words():
    text = "aaa bbb ccc ddd eee fff ggg hhh"
    better = FixedKeyboard(lambda c, p: words_of(text))  # every word shown at once (k = 8)
    worse = FixedKeyboard(lambda c, p: [w for w in words_of(text) if w.startswith(p) and p])  # after a letter
    a = evaluate_keyboard(better, text, (3, 8), segments=1, record=True)
    b = evaluate_keyboard(worse, text, (3, 8), segments=1, record=True)
    for r in (a, b):  # the per-word units add up to the figures
        u = word_units(r)
        for k in (3, 8):
            assert 1 - u["keys"][k].sum() / u["chars"].sum() == pytest.approx(r["ksr"][k])
    same = bootstrap_ratios(a, a, resamples=200)
    assert same["ksr"][8] == [1.0, 1.0]
    ci = bootstrap_ratios(a, b, resamples=500)
    # at k = 8 "better" costs 1 per word, "worse" 2: each word saves 2 or 1 keystrokes, so every resample has
    # the same ratio of savings, 2.0
    assert ci["ksr"][8] == [pytest.approx(2.0), pytest.approx(2.0)]
    assert ci["next_word_top1"] is None  # "worse" never has a top-1 next word: the ratio is undefined
    with pytest.raises(ValueError, match="same words"):
        bootstrap_ratios(a, evaluate_keyboard(better, text + " ii", (3, 8), segments=1, record=True))


# -- rnnlab eval --keyboard and rnnlab words, end to end --------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=HANG_GUARD)


def test_eval_keyboard_cli_types_a_users_text(tmp_path):
    ckpt = tiny_checkpoint()
    typed = tmp_path / "mine.txt"
    typed.write_text("the traveller smiled at the machine. we talked about time in the garden.\n" * 3)
    r = _cli("eval", ckpt, typed, "--keyboard", "--keyboard-words", "30", "--keyboard-bootstrap", "100", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    kbs = report["keyboards"]
    names = ["rnnlab", "ngram"] + (["presage"] if presage.unavailable() is None else [])
    assert list(kbs) == names and report["source"] == str(typed)
    assert {k["words"] for k in kbs.values()} == {30}  # the first 30 words of the file, by every keyboard
    # the model and the n-gram both learnt these sentences: most keystrokes are saved by all of them
    assert all(k["ksr"]["3"] > 0.3 for k in kbs.values())
    rat = report["ratios"]["rnnlab / ngram"]
    assert rat["ksr"]["3"] == pytest.approx(kbs["rnnlab"]["ksr"]["3"] / kbs["ngram"]["ksr"]["3"])
    lo, hi = report["intervals"]["rnnlab / ngram"]["ksr"]["3"]
    assert lo <= rat["ksr"]["3"] <= hi
    assert all(k["latency"]["p50_ms"] > 0 for k in kbs.values())
    # the table for people names every keyboard, every k, the ratios with their intervals, the latency
    r = _cli("eval", ckpt, typed, "--keyboard", "--keyboard-words", "10", "--keyboard-presage", "off")
    assert r.returncode == 0, r.stderr
    assert "keystroke savings @3" in r.stdout and "| rnnlab / ngram |" in r.stdout and "presage" not in r.stdout
    assert "ms per query" in r.stdout and " [" in r.stdout


def test_a_checkpoint_without_a_word_model_says_so_and_rnnlab_words_builds_it(tmp_path):
    run = tmp_path / "old"
    shutil.copytree(tiny_checkpoint(), run)
    (run / "words.json").unlink()
    (run / "words.safetensors").unlink()
    r = _cli("suggest", run, "the time trav", "--json")
    said = [line for line in r.stderr.splitlines() if "torch thread" not in line]  # the thread choice is said too
    assert r.returncode == 0 and len(said) == 1 and "has no word model" in said[0]
    assert f"rnnlab words {run}" in r.stderr
    r = _cli("words", run)
    assert r.returncode == 0, r.stderr
    assert "keyboard: word model of" in r.stdout and (run / "words.json").is_file()
    r = _cli("suggest", run, "the time trav", "--json")
    assert r.returncode == 0 and all("torch thread" in line for line in r.stderr.splitlines())  # no notice now
    r = _cli("words", run, "--order", "4")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_eval_keyboard_usage_errors(tmp_path):
    ckpt = tiny_checkpoint()
    r = _cli("eval", ckpt, "--keyboard")  # trained on all of its text: nothing held out to type
    assert r.returncode == 2 and "held out" in r.stderr and "Traceback" not in r.stderr
    typed = tmp_path / "t.txt"
    typed.write_text("the time\n")
    for bad in (["--keyboard-presage", "maybe"], ["--keyboard-bootstrap", "-1"], ["--keyboard-words", "-3"],
                ["--dynamic"]):
        r = _cli("eval", ckpt, typed, "--keyboard", *bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (bad, r.stderr)
