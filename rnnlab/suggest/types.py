"""What the keyboard is asked and what it answers."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SuggestRequest:
    """One suggestion request: the text typed so far, how many answers, whose cache to use."""
    text: str
    k: int = 5
    client: str = ""


@dataclass
class TokenProb:
    text: str  # the token as typed (a character for char models, a word for word models)
    prob: float


@dataclass
class Completion:
    word: str  # the whole word as the user will see it (their typed part + the completion)
    append: str  # what to append to the text to get it (may start with boundary characters)
    prob: float  # P(the model writes ``append`` and then ends the word); the word search's mixed score
    logprob: float


@dataclass
class Suggestions:
    mode: str  # "complete" (the text ends inside a word) or "next_word" (it ends at a boundary)
    partial: str  # the word being completed, as the user typed it ("" in next_word mode)
    next_chars: list[TokenProb] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    model_text: str = ""  # the text the model saw (after the checkpoint's preprocessing)
    context_tokens: int = 0  # tokens run to bring the state of the text up to date (1 per typed char)
    beam_steps: int = 0  # model calls made by the completion search
    features: object = field(default=None, repr=False)  # the word search's candidates (``mix.Candidates``), when collected

    def to_dict(self) -> dict:
        """The suggestions as plain JSON types (what ``dataclasses.asdict`` gives, built directly: the
        server calls this once per keystroke)."""
        return {"mode": self.mode, "partial": self.partial,
                "next_chars": [{"text": c.text, "prob": c.prob} for c in self.next_chars],
                "completions": [{"word": c.word, "append": c.append, "prob": c.prob, "logprob": c.logprob}
                                for c in self.completions],
                "model_text": self.model_text, "context_tokens": self.context_tokens,
                "beam_steps": self.beam_steps}
