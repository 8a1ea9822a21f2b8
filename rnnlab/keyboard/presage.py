"""Presage, the open-source predictive-text engine, as a keyboard of ``rnnlab.keyboard``'s protocol.

Presage (Debian: ``apt-get install presage``; the library ``libpresage.so.1`` and the tool
``text2ngram`` come with it) is trained here on the same training text as rnnlab: ``text2ngram``
writes its 1-, 2- and 3-gram counts into a SQLite database (case kept), and Presage predicts with
its smoothed n-gram predictor (``DELTAS 0.01 0.1 0.89``, its default interpolation) and its
recency predictor (the words of the text before, its default cut-off of 20 tokens) — its own
defaults, without its abbreviation list, its built-in English database or online learning. It
is driven through its C API (``presage_new_with_config``, ``presage_predict``) by ``ctypes``: no
compiler or header is needed. The text before the cursor is its past stream (the last
``past_chars`` characters). Presage may offer the typed word itself; as for every keyboard here,
it is dropped (Presage is asked for one more word to make up for it).

Presage's tokeniser splits words at apostrophes (``don't`` is ``don`` + ``t``), so it cannot
complete such words of the keyboard's protocol; that is Presage's behaviour, measured as it is.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from ..errors import RnnlabError

LIBRARY = "libpresage.so.1"
INSTALL = "apt-get install presage"
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)

CONFIG = """<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<Presage>
  <PredictorRegistry><LOGGER>ERROR</LOGGER>
    <PREDICTORS>NgramPredictor RecencyPredictor</PREDICTORS></PredictorRegistry>
  <ContextTracker><LOGGER>ERROR</LOGGER><SLIDING_WINDOW_SIZE>80</SLIDING_WINDOW_SIZE>
    <LOWERCASE_MODE>no</LOWERCASE_MODE><ONLINE_LEARNING>no</ONLINE_LEARNING></ContextTracker>
  <Selector><LOGGER>ERROR</LOGGER><SUGGESTIONS>{suggestions}</SUGGESTIONS>
    <REPEAT_SUGGESTIONS>yes</REPEAT_SUGGESTIONS><GREEDY_SUGGESTION_THRESHOLD>0</GREEDY_SUGGESTION_THRESHOLD></Selector>
  <PredictorActivator><LOGGER>ERROR</LOGGER><PREDICT_TIME>1000</PREDICT_TIME>
    <MAX_PARTIAL_PREDICTION_SIZE>60</MAX_PARTIAL_PREDICTION_SIZE><COMBINATION_POLICY>Meritocracy</COMBINATION_POLICY>
  </PredictorActivator>
  <ProfileManager><LOGGER>ERROR</LOGGER><AUTOPERSIST>false</AUTOPERSIST></ProfileManager>
  <Predictors>
    <NgramPredictor><PREDICTOR>SmoothedNgramPredictor</PREDICTOR><LOGGER>ERROR</LOGGER>
      <DBFILENAME>{db}</DBFILENAME><DELTAS>{deltas}</DELTAS><LEARN>false</LEARN>
      <DatabaseConnector><LOGGER>ERROR</LOGGER></DatabaseConnector></NgramPredictor>
    <RecencyPredictor><PREDICTOR>RecencyPredictor</PREDICTOR><LOGGER>ERROR</LOGGER>
      <LAMBDA>1</LAMBDA><N_0>1</N_0><CUTOFF_THRESHOLD>{recency}</CUTOFF_THRESHOLD></RecencyPredictor>
  </Predictors>
</Presage>
"""


def unavailable() -> str | None:
    """Why Presage cannot run here (one line, with the fix), or None when it can."""
    if shutil.which("text2ngram") is None:
        return f"text2ngram is not installed ({INSTALL})"
    try:
        ctypes.CDLL(LIBRARY)
    except OSError:
        return f"{LIBRARY} is not installed ({INSTALL})"
    return None


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(LIBRARY)
    lib.presage_new_with_config.argtypes = [_CALLBACK, ctypes.c_void_p, _CALLBACK, ctypes.c_void_p, ctypes.c_char_p,
                                            ctypes.POINTER(ctypes.c_void_p)]
    lib.presage_new_with_config.restype = ctypes.c_int
    lib.presage_predict.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p))]
    lib.presage_predict.restype = ctypes.c_int
    lib.presage_free_string_array.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.presage_free_string_array.restype = None
    lib.presage_free.argtypes = [ctypes.c_void_p]
    lib.presage_free.restype = None
    lib.presage_config_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.presage_config_set.restype = ctypes.c_int
    return lib


class PresageKeyboard:
    """Presage trained on ``train_text`` (see the module docstring). ``close()`` frees it and its
    database (in a temporary folder unless ``workdir`` is given)."""

    name = "presage"

    def __init__(self, train_text: str, workdir: str | Path | None = None, order: int = 3,
                 deltas: Sequence[float] = (0.01, 0.1, 0.89), recency: int = 20, suggestions: int = 6,
                 past_chars: int = 1000):
        why = unavailable()
        if why is not None:
            raise RnnlabError(f"Presage is not available: {why}")
        if len(deltas) != order:
            raise ValueError(f"deltas must have one weight per order ({order}), got {deltas}")
        self._tmp = None if workdir is not None else tempfile.mkdtemp(prefix="rnnlab-presage-")
        self.dir = Path(workdir if workdir is not None else self._tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.suggestions, self.past_chars = suggestions, past_chars
        self._handle = ctypes.c_void_p()
        try:
            db = self.dir / "ngrams.sqlite"
            text = self.dir / "train.txt"
            text.write_text(train_text, encoding="utf-8")
            db.unlink(missing_ok=True)
            for n in range(1, order + 1):  # text2ngram writes one order per run, appending to the database
                r = subprocess.run(["text2ngram", "-n", str(n), "-f", "sqlite", "-o", str(db), *(["-a"] if n > 1 else []),
                                    str(text)], capture_output=True, text=True)
                if r.returncode != 0:
                    raise RnnlabError(f"text2ngram failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[:200]}")
            config = self.dir / "presage.xml"
            config.write_text(CONFIG.format(db=escape(str(db)), deltas=" ".join(f"{d:g}" for d in deltas),
                                            recency=recency, suggestions=suggestions), encoding="utf-8")
            self._lib = _library()
            self._past = ctypes.create_string_buffer(b"")
            self._future = ctypes.create_string_buffer(b"")
            # the callbacks are kept on the object: Presage calls them on every prediction
            self._past_cb = _CALLBACK(lambda _: ctypes.addressof(self._past))
            self._future_cb = _CALLBACK(lambda _: ctypes.addressof(self._future))
            rc = self._lib.presage_new_with_config(self._past_cb, None, self._future_cb, None,
                                                   str(config).encode(), ctypes.byref(self._handle))
            if rc != 0 or not self._handle:
                raise RnnlabError(f"Presage did not start (error {rc}); check {config}")
        except BaseException:
            self.close()
            raise

    def predict(self, past: str) -> list[str]:
        """Presage's words for the text ``past`` (up to ``suggestions`` of them, best first)."""
        tail = past[-self.past_chars:]
        self._past = ctypes.create_string_buffer(tail.encode("utf-8", "replace"))
        arr = ctypes.POINTER(ctypes.c_char_p)()
        rc = self._lib.presage_predict(self._handle, ctypes.byref(arr))
        if rc != 0:
            raise RnnlabError(f"Presage could not predict (error {rc})")
        out, i = [], 0
        try:
            while arr[i] is not None:
                out.append(arr[i].decode("utf-8", "replace"))
                i += 1
        finally:
            self._lib.presage_free_string_array(arr)
        return out

    def completions(self, context: str, partial: str, k: int) -> list[str]:
        if k + 1 > self.suggestions:  # one more than asked: the typed word itself is dropped
            rc = self._lib.presage_config_set(self._handle, b"Presage.Selector.SUGGESTIONS", str(k + 1).encode())
            if rc != 0:
                raise RnnlabError(f"Presage refused {k + 1} suggestions (error {rc})")
            self.suggestions = k + 1
        return [w for w in self.predict(context + partial) if w != partial and w.startswith(partial)][:k]

    def completions_batch(self, queries: Sequence[tuple[str, str]], k: int,
                          streams: Sequence[str] | None = None) -> list[list[str]]:
        return [self.completions(c, p, k) for c, p in queries]

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.presage_free(self._handle)
            self._handle = ctypes.c_void_p()
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


__all__ = ["INSTALL", "PresageKeyboard", "unavailable"]
