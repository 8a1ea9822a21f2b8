"""The keyboard simulation (rnnlab.keyboard.simulate) with hand-counted keystrokes, the word-bigram baseline
(rnnlab.keyboard.ngram) on a toy corpus, and one small run of rnnlab's engine against it."""
import math

import pytest
from tiny_keyboard_model import CORPUS, tiny_checkpoint

from rnnlab.keyboard import (
    BOS,
    BigramKeyboard,
    BigramModel,
    FixedKeyboard,
    Keyboard,
    RnnlabKeyboard,
    compare,
    evaluate_keyboard,
    last_word,
    split_heldout,
)
from rnnlab.suggest import word_spans, words_of

# -- words ------------------------------------------------------------------------------------------

def test_words_follow_the_suggestion_rules():
    text = "'Tis don't,  dogs' rock'n'roll\n3rd x''y -- ’twas o’clock"
    assert words_of(text) == ["Tis", "don't", "dogs", "rock'n'roll", "3rd", "x", "y", "twas", "o’clock"]
    assert word_spans("ab, c") == [(0, 2), (4, 5)]
    assert words_of("...!") == [] and words_of("") == []


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
    kb = BigramKeyboard.from_text(train)
    one = evaluate_keyboard(kb, text, ks=(1, 2, 3, 5), segments=1)
    many = evaluate_keyboard(kb, text, ks=(1, 2, 3, 5), segments=5, history="the ")
    assert many["segments"] == 5
    for k in (1, 2, 3, 5):
        assert one["keystrokes"][k] == many["keystrokes"][k] == _reference_keystrokes(kb, text, k)
    assert one["keystrokes"][1] > one["keystrokes"][3] > one["keystrokes"][5]


def test_max_words_types_only_the_first_words():
    r = evaluate_keyboard(FixedKeyboard(lambda c, p: []), "ab cd, ef gh", max_words=2)
    assert r["words"] == 2 and r["characters"] == len("ab cd")


# -- the bigram baseline ------------------------------------------------------------------------------

def test_bigram_probabilities_by_hand():
    # words a b a b a c: bigrams <s>a, ab x2, ba x2, ac; c(a) = 3 (ab, ab, ac), N1+(a .) = 2
    m = BigramModel("a b a b a c".split(), discount=0.5)
    # Kneser-Ney lower order: distinct predecessors a: {<s>, b}, b: {a}, c: {a} -> 2/4, 1/4, 1/4
    assert m.p_low == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert m.backoff("a") == pytest.approx(0.5 * 2 / 3)
    assert m.prob("b", "a") == pytest.approx((2 - 0.5) / 3 + 0.5 * 2 / 3 * 0.25)  # 0.5833
    assert m.prob("c", "a") == pytest.approx((1 - 0.5) / 3 + 0.5 * 2 / 3 * 0.25)  # 0.25
    assert m.prob("a", "a") == pytest.approx(0.5 * 2 / 3 * 0.5)  # unseen after a: backoff only
    assert sum(m.prob(w, "a") for w in "abc") == pytest.approx(1.0)
    assert m.prob("a", "zzz") == 0.5 and m.prob("zzz", "a") == 0.0  # unseen history; unknown word
    assert m.prob("a", BOS) == pytest.approx(0.5 + 0.5 * 1 * 0.5)
    assert m.top("a", "", 3) == (("b", pytest.approx(0.58333, abs=1e-5)), ("c", 0.25), ("a", pytest.approx(1 / 6)))
    # after c (never a history): P_low; b and c tie at 0.25 -> the more frequent b first
    assert [w for w, _ in m.top("c", "", 3)] == ["a", "b", "c"]
    assert [w for w, _ in m.top("a", "c", 3)] == ["c"]
    assert m.top("a", "x", 3) == ()
    ml = BigramModel("a b a b a c".split(), discount=0.5, lower="ml")
    assert ml.p_low == {"a": 0.5, "b": pytest.approx(1 / 3), "c": pytest.approx(1 / 6)}
    # Ney's discount: n1 = 2 (<s>a, ac), n2 = 2 (ab, ba) -> 2 / (2 + 4)
    assert BigramModel("a b a b a c".split()).discount == pytest.approx(1 / 3)


def test_bigram_keyboard_completes_by_previous_word_and_prefix():
    kb = BigramKeyboard.from_text("the cat sat. The cat ran. the dog sat, the cat sat!")
    assert isinstance(kb, Keyboard)
    assert last_word("so, the  ") == "the" and last_word("") == BOS and last_word("x don't, ") == "don't"
    assert kb.completions("and the ", "", 2) == ["cat", "dog"]
    assert kb.completions("the cat ", "", 2) == ["sat", "ran"]
    assert kb.completions("the cat ", "r", 5) == ["ran"]
    assert kb.completions("", "T", 5) == ["The"]  # case-sensitive prefixes
    assert kb.completions_batch([("the ", "d"), ("x", "q")], 3) == [["dog"], []]


# -- rnnlab's engine, end to end ------------------------------------------------------------------------

def test_rnnlab_against_bigram_on_the_tiny_model():
    kb = RnnlabKeyboard.from_checkpoint(tiny_checkpoint())
    try:
        train, held = split_heldout(CORPUS, 0.2)
        text = held[:200]
        # the batched answers are the engine's own answers, one request at a time
        direct = kb.engine.suggest("the time trav", 3).completions
        assert kb.completions("the time ", "trav", 3) == [c.word for c in direct]
        out = compare(kb, BigramKeyboard.from_text(train), text, history=train, segments=4)
        a, b = out["rnnlab"], out["baseline"]
        assert a["characters"] == b["characters"] == len(text) and a["words"] == b["words"] == len(words_of(text))
        # the tiny model knows these sentences by heart: most words are accepted after a letter or two
        assert a["ksr"][3] > 0.4 and a["completion_recall"][1] > 0.8
        assert a["ksr"][1] <= a["ksr"][3] <= a["ksr"][5]
        assert out["ratios"]["ksr"][3] == pytest.approx(a["ksr"][3] / b["ksr"][3])
        assert math.isfinite(a["seconds"]) and a["queries"] >= a["words"]
    finally:
        kb.engine.close()


# -- the prototype re-rankers (rnnlab.keyboard.simulate) -----------------------------------------------------------

def test_drop_typed_and_lexicon_filter_on_fixed_answers():
    from rnnlab.keyboard import DropTyped, LexiconFilter

    kb = FixedKeyboard(lambda c, p: ["th", "thx", "the", "thq", "this"])
    assert DropTyped(kb).completions("", "th", 2) == ["thx", "the"]
    assert LexiconFilter(kb, {"the", "this", "th"}).completions("", "th", 3) == ["the", "this"]
    assert LexiconFilter(kb, {"the", "this"}, mode="demote").completions("", "th", 3) == ["the", "this", "thx"]
    # "the cat": "the" shown 2nd after DropTyped removes nothing at a word start; k=1 misses it
    r = evaluate_keyboard(DropTyped(FixedKeyboard(lambda c, p: ["a", "the", "cat"])), "the cat", ks=(1, 3))
    assert r["keystrokes"] == {1: 3 + 1 + 3, 3: 1 + 1 + 1}


def test_word_scorer_is_the_engines_probability_and_mix_ranks_words():
    from rnnlab.keyboard import MixKeyboard, WordScorer

    kb = RnnlabKeyboard.from_checkpoint(tiny_checkpoint())
    try:
        s = kb.suggestions([("we sat in the ", "ga")], 4, ["s"])[0]
        conts = [c.append for c in s.completions] + ["rxq"]
        exact = WordScorer(kb.engine).score([("we sat in the ga", "kb:s", conts)])[0]
        assert exact[:-1] == pytest.approx([c.logprob for c in s.completions], abs=1e-4)
        assert exact[-1] < min(exact[:-1]) - 3  # a non-word is much less likely
        bm = BigramModel(words_of(CORPUS))
        mix = MixKeyboard(kb, bm, weights=(0.5, 0.5, 0.0), beam_k=5, lexicon_k=5)
        assert mix.completions("we sat in the ", "ga", 3)[0] == "garden"
        assert "the" not in mix.completions("we sat in ", "the", 5)  # the typed part is never shown
        nn_only = MixKeyboard(kb, bm, weights=(1.0, 0.0, 0.0), beam_k=5, lexicon_k=0, cache_k=0)
        assert nn_only.completions("we sat in the ", "ga", 1) == ["garden"]
    finally:
        kb.engine.close()


def test_bigram_prefix_mass():
    m = BigramModel("a b a b ab c".split(), discount=0.5)
    for prev in ("a", "b", "zzz", BOS):
        assert m.prefix_mass(prev, "") == pytest.approx(1.0)
        assert m.prefix_mass(prev, "a") == pytest.approx(m.prob("a", prev) + m.prob("ab", prev))
        assert m.prefix_mass(prev, "q") == 0.0


# -- rnnlab eval --keyboard, end to end ------------------------------------------------------------------

def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_eval_keyboard_cli_types_a_users_text(tmp_path):
    import json

    ckpt = tiny_checkpoint()
    typed = tmp_path / "mine.txt"
    typed.write_text("the traveller smiled at the machine. we talked about time in the garden.\n" * 3)
    r = _cli("eval", ckpt, typed, "--keyboard", "--keyboard-words", "30", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    kbs = report["keyboards"]
    assert list(kbs) == ["rnnlab", "rnnlab+words", "bigram"] and report["source"] == str(typed)
    assert {k["words"] for k in kbs.values()} == {30}  # the first 30 words of the file, by every keyboard
    # the model and the bigram both learnt these sentences: most keystrokes are saved by all of them
    assert all(k["ksr"]["3"] > 0.3 for k in kbs.values())
    assert report["ratios"]["rnnlab"]["ksr"]["3"] == pytest.approx(kbs["rnnlab"]["ksr"]["3"] / kbs["bigram"]["ksr"]["3"])
    # the table for people names every keyboard and every k
    r = _cli("eval", ckpt, typed, "--keyboard", "--keyboard-words", "10", "--keyboard-mix", "off")
    assert r.returncode == 0, r.stderr
    assert "keystroke savings @3" in r.stdout and "rnnlab+words" not in r.stdout and "| bigram |" in r.stdout


def test_eval_keyboard_usage_errors(tmp_path):
    ckpt = tiny_checkpoint()
    r = _cli("eval", ckpt, "--keyboard")  # trained on all of its text: nothing held out to type
    assert r.returncode == 2 and "held out" in r.stderr and "Traceback" not in r.stderr
    typed = tmp_path / "t.txt"
    typed.write_text("the time\n")
    for bad in (["--keyboard-mix", "1,2"], ["--keyboard-mix", "-1,1,1"], ["--keyboard-mix", "nan,1,1"],
                ["--keyboard-words", "-3"], ["--dynamic"]):
        r = _cli("eval", ckpt, typed, "--keyboard", *bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (bad, r.stderr)
