"""Typed settings: each dataclass field carries its help, choices and bounds, checked in one place.

The config dataclasses (``rnnlab.config``, ``rnnlab.models.config``) declare every field with
``setting(...)``; ``Settings.validate`` checks types and bounds for the CLI, the library and the
server alike, ``Settings.from_dict`` reads a checkpoint's JSON with the same checks, and the CLI
generates its flags from the same fields (``--hidden-size`` for ``hidden_size``, with the help,
choices and default written here once).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Callable

from .errors import UsageError

_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, help: str = "", *, choices: tuple | Callable[[], tuple] | None = None,
            min: float | None = None, max: float | None = None, above: float | None = None,
            factory: Callable[[], Any] | None = None, cli: bool = True, metavar: str | None = None,
            parse: Callable[[str], Any] | None = None) -> Any:
    """A config field. ``min``/``max`` bound it inclusively, ``above`` exclusively; ``choices`` is a
    tuple or a function returning one (for registries filled at import time); ``cli=False`` keeps
    it off the command line (e.g. ``vocab_size``, set from the data); ``parse`` reads its flag's
    text (e.g. "10m" for seconds)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "above": above, "cli": cli, "metavar": metavar,
            "parse": parse}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def choices_of(f: dataclasses.Field) -> tuple | None:
    c = f.metadata.get("choices")
    return c() if callable(c) else c


def kind_of(tp: Any) -> tuple[type, bool]:
    """(base type, whether None is allowed) of an annotation such as ``int``, ``str | None``."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (typing.get_origin(rest[0]) or rest[0]), True
    return (typing.get_origin(tp) or tp), False


def check_value(name: str, tp: Any, value: Any, f: dataclasses.Field | None = None) -> Any:
    """The value, checked against its annotation and the field's bounds (ints are accepted where a
    float is expected and converted); raises ``UsageError`` naming the flag."""
    base, optional = kind_of(tp)
    if value is None:
        if optional:
            return None
        raise UsageError(f"{flag(name)} must be given, got null")
    if base is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{flag(name)} must be true or false, got {value!r}")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{flag(name)} must be an integer, got {value!r}")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{flag(name)} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise UsageError(f"{flag(name)} must be a finite number, got {value}")
    elif base is str:
        if not isinstance(value, str):
            raise UsageError(f"{flag(name)} must be text, got {value!r}")
    elif base is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{flag(name)} must be a list of texts, got {value!r}")
    if f is not None:
        meta = f.metadata
        choices = choices_of(f)
        if choices is not None and value not in choices:
            raise UsageError(f"unknown {flag(name)} {value!r}; choose one of: {', '.join(map(str, choices))}")
        lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (above is not None and value <= above):
            raise UsageError(f"{flag(name)} must be {_range(lo, hi, above)}, got {value!r}")
    return value


def _range(lo, hi, above) -> str:
    low = f"> {above:g}" if above is not None else (f">= {lo:g}" if lo is not None else "")
    if hi is None:
        return low
    return f"between {lo:g} and {hi:g}" if lo is not None else (f"{low} and <= {hi:g}" if low else f"<= {hi:g}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a settings class (resolved once: every request validates its settings)."""
    return typing.get_type_hints(cls)


class Settings:
    """Mixin for the config dataclasses: field checks, JSON round trip, cross-field ``check``."""

    def validate(self, prefix: str = "") -> None:
        """Check every field (type, choices, bounds), then the cross-field rules (``check``).
        ``prefix``: how the command line spells these fields' flags (``adapt_``: ``--adapt-clients``),
        so that a message names the flag the user typed."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(prefix + f.name, hints[f.name], getattr(self, f.name), f))
        self.check()

    def check(self) -> None:
        """Rules between fields; subclasses override."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, validate: bool = True):
        """Build from JSON, ignoring keys this version does not know (forward compatible) and
        checking the rest (a damaged checkpoint fails with the field's name)."""
        if not isinstance(data, dict):
            raise UsageError(f"expected an object of {cls.__name__} settings, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        obj = cls(**{k: v for k, v in data.items() if k in names})
        if validate:
            obj.validate()
        return obj

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
