"""Frozen config records and the checks their fields share.

Every stage of a build (export, verification, fusion, precision, calibration, evaluation, engines, benchmarks)
is configured by a frozen dataclass that is written into the bundle manifest and read back from it, so a bundle
can be rebuilt from its manifest alone. ``StageConfig`` gives them that round trip. It lives in the runtime,
the package every other one may import, so that calib, export and bench share one base without a cycle.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import MISSING, asdict, fields
from typing import Any

import numpy as np

from distilrt.errors import UserInputError


class StageConfig:
    """to_dict/from_dict for frozen config dataclasses, so a manifest can rebuild what it records."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """The config a manifest or JSON file records; UserInputError (never a TypeError) for anything else, since
        manifests are untrusted data."""
        if not isinstance(data, Mapping):
            raise UserInputError(f"{cls.__name__} settings must be a JSON object, got {reprlib.repr(data)}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserInputError(f"{cls.__name__} has no settings {sorted(unknown)}; known: {sorted(known)}")
        try:
            return cls(**{k: _tuples(v) for k, v in data.items()})
        except (TypeError, ValueError) as e:  # a missing setting, or one of a type __post_init__ cannot compare
            if isinstance(e, UserInputError):
                raise
            raise UserInputError(f"{cls.__name__} settings {reprlib.repr(dict(data))} are not valid: {e}") from e


def _tuples(value):
    """JSON turns tuples into lists; frozen configs keep tuples so they stay hashable and comparable."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def default_of(config_class, name: str):
    """A config field's default: the CLI and the CI job show and use it instead of writing the number again."""
    for f in fields(config_class):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise KeyError(f"{config_class.__name__}.{name} has no default")
    raise KeyError(f"{config_class.__name__} has no field {name!r}")


def is_int(value) -> bool:
    """An integer (Python or numpy), and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# How a refused value is shown: a huge int or a long string is cut short, so the message stays one line.
_SHOWN = reprlib.Repr()
_SHOWN.maxlong = 24
_SHOWN.maxstring = 60
_SHOWN.maxother = 60


def shown(value) -> str:
    """``value`` for an error message: its repr, shortened (a 2**70 has 22 digits, a 2**1000 is cut with ...).
    An int too long for Python to print (over 4,300 digits) is described by its length."""
    if isinstance(value, int) and value.bit_length() > 1024:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    return _SHOWN.repr(value)


def check_int(name: str, value, *, minimum: int, maximum: int | None = None, fix: str = "") -> None:
    """UserInputError naming the setting, its allowed range and ``fix`` unless ``value`` is an integer from
    ``minimum`` to ``maximum`` (no upper bound when None). Python ints of any size are compared as ints, so a
    2**70 is refused here rather than overflowing later in numpy or tokenizers."""
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        message = f"{name} must be an integer {allowed}, got {shown(value)}"
        raise UserInputError(f"{message}; {fix}" if fix else message)
