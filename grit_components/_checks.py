"""Argument checks shared by the core: a wrong type is a TypeError, a bad value a ValueError, each naming
the parameter, before any tensor is built."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    if value != value:
        raise ValueError(f"{name} must not be NaN")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise ValueError(f"{name} must be {'>' if exclusive_minimum else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_unicode(name: str, value: str) -> str:
    """`value` if it is valid Unicode text: an unpaired surrogate (what `errors="surrogateescape"` makes of
    undecodable bytes, e.g. command-line arguments) cannot be tokenized, and the tokenizer's own error
    names neither the input nor the character."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} contains an unpaired surrogate {value[error.start]!r} at position {error.start}: "
                         "it is not valid Unicode text (undecodable bytes?); decode the input as UTF-8, e.g. "
                         "with errors='replace'") from None
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_str(name: str, value: Any, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{name} must not be empty")
    return check_unicode(name, value)


def check_texts(name: str, values: Any, *, allow_empty_strings: bool = False) -> list[str]:
    """A list or tuple of str. A bare str is rejected: it is almost always a missing `[...]`."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of str, not a single str; wrap one text in a list")
    if not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of str, not {type(values).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] must be a str, not {type(value).__name__}")
        if not allow_empty_strings and not value:
            raise ValueError(f"{name}[{i}] is an empty string; there is nothing to embed")
        check_unicode(f"{name}[{i}]", value)
    return list(values)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {list(choices)}, not {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
