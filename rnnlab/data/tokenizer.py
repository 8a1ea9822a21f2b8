"""The tokenizer saved with every checkpoint: text -> token ids -> text, the one way in and out.

It holds the vocabulary and the settings the text was read with (preset, char/word tokens, the
file encoding), so generation, suggestions, evaluation and the server all read a prompt exactly as
the corpus was read in training. ``ids`` is the one way a model text becomes token ids: generation
(``encode_prompt``, which also reports unknown tokens), suggestions (the engine, which continues a
cached state), online adaptation and the keyboard measurement (through the engine) all call it.

**The empty prompt** is the start of a text: the model reads the *start token* instead — a line
break if the vocabulary has one, else a space, else (a word vocabulary) its most frequent token —
and the start token is context only, never part of the output. A non-empty prompt is read as it
is, from the model's initial state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import RnnlabError, UsageError
from .corpus import preprocess
from .vocab import Vocab


@dataclass
class Prompt:
    """A prompt as the model reads it."""

    text: str  # the prompt as given
    model_text: str  # after the preset (what the model sees)
    ids: list[int]  # the token ids to warm the model up on (the start token for an empty prompt)
    unknown: list[str] = field(default_factory=list)  # distinct tokens the vocabulary lacks (read as <unk>)
    at_start: bool = False  # ids are the start token, not the prompt's own tokens


@dataclass
class Tokenizer:
    vocab: Vocab
    preset: str = "raw"  # raw | letters
    token: str = "char"  # char | word
    encoding: str = "utf-8"  # how the corpus file was decoded (kept for evaluating other files alike)
    errors: str = "strict"

    @property
    def word_level(self) -> bool:
        return self.token == "word"

    # -- text -> tokens -------------------------------------------------------------------------
    def model_text(self, text: str) -> str:
        """The text as the model was trained to see it. The ``letters`` preset keeps a trailing
        boundary, which matters to a keyboard: "the time " asks for a new word, "the time" completes one."""
        if self.preset == "letters":
            out = preprocess(text, "letters")
            if out and text and not text[-1].isalpha():
                out += " "
            return out
        return text

    def split(self, model_text: str) -> list[str]:
        """Tokens of a model text: its characters, or its whitespace-separated words."""
        return model_text.split() if self.word_level else list(model_text)

    def start_ids(self) -> list[int]:
        """The start token's id (see the module docstring)."""
        for t in ("\n", " "):
            if t in self.vocab:
                return self.vocab.encode([t])
        counts = list(self.vocab.counts)
        if self.vocab.unk_id is not None:
            counts[self.vocab.unk_id] = -1
        if not counts or max(counts) < 0:
            raise RnnlabError("the vocabulary has no token to start from; give a non-empty prompt")
        return [max(range(len(counts)), key=lambda i: (counts[i], -i))]

    def ids(self, model_text: str, after: int | None = None) -> list[int]:
        """The token ids of ``model_text`` (a text after ``model_text()``), the one way in. ``after``
        None: read from the model's initial state, where the empty text is the start token;
        ``after`` n: the tokens after the first n, for a state that has read those (nothing left:
        no ids). Tokens the vocabulary lacks are ``<unk>`` (``encode_prompt`` says which)."""
        tokens = self.split(model_text)
        if not tokens and after is None:
            return self.start_ids()
        return self.vocab.encode(tokens[after or 0:])

    def encode_prompt(self, text: str, strict: bool = False, warn: Callable[[str], None] | None = None) -> Prompt:
        """The one way a prompt becomes ids. Tokens the vocabulary lacks become ``<unk>`` (``warn``
        is told which), or raise with ``strict`` or when the vocabulary has no ``<unk>``."""
        mtext = self.model_text(text)
        tokens = self.split(mtext)
        unknown = self.vocab.unknown(tokens)
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            if self.vocab.unk is None:
                raise UsageError(f"the prompt has tokens this model never saw ({shown}) and the model has no <unk>; "
                                 f"remove them from the prompt")
            if strict:
                raise UsageError(f"the prompt has tokens this model never saw ({shown}); remove them, or drop "
                                 f"--strict to read them as <unk>")
            if warn is not None:
                warn(f"the prompt has tokens this model never saw ({shown}); they are read as <unk>")
        return Prompt(text, mtext, self.ids(mtext), unknown, at_start=not tokens)

    # -- ids -> text ----------------------------------------------------------------------------
    def decode(self, ids) -> str:
        return self.vocab.decode(ids)

    def piece(self, prompt: Prompt, token_id: int, first: bool) -> str:
        """The text one generated token adds after ``prompt`` (and the tokens before it): word tokens
        are joined by spaces, with no space after a prompt that is empty or ends in one."""
        sep = self.vocab.separator
        if first and (not prompt.text or prompt.text[-1].isspace()):
            sep = ""
        return sep + self.vocab.idx_to_token[int(token_id)]

    def continue_text(self, prompt: Prompt, ids) -> str:
        """The prompt followed by the generated ``ids``, as text (see ``piece``)."""
        return prompt.text + "".join(self.piece(prompt, t, i == 0) for i, t in enumerate(ids))

    def suppressed_ids(self) -> list[int]:
        """Ids never generated: ``<unk>`` stands for no real text (a vocabulary of only ``<unk>`` keeps it)."""
        return [self.vocab.unk_id] if self.vocab.unk_id is not None and len(self.vocab) > 1 else []

    def to_dict(self) -> dict:
        return {"preset": self.preset, "token": self.token, "encoding": self.encoding, "errors": self.errors}
