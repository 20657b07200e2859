"""Reading the JSON records Spot Guard keeps in annotations, field by field, checked against the dataclass's types.

A record's fields are read by the type its dataclass declares, so a field added later is checked without more
code: ``str``, ``int`` (never a bool), ``bool``, ``float`` (finite), ``X | None``, ``tuple[str, ...]``. Any other
type needs a reader of its own (``custom``); ``check_declared`` says which fields have none, and the unit tests
run it for every record.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

#: The longest annotation value read as JSON: the API server allows 256 KiB for all of an object's annotations.
MAX_TEXT = 256 * 1024


class WrongFieldError(ValueError):
    """One field's value is not what the record declares: ``field`` is its JSON key, ``expected`` what it wants."""

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field}: expected {expected}")
        self.field = field
        self.expected = expected


Reader = Callable[[Any], Any]


def load_object(text: object) -> dict[str, Any]:
    """The JSON object in ``text``; WrongFieldError("", ...) when it is not one (never another exception)."""
    if not isinstance(text, str):
        raise WrongFieldError("", "a JSON object as text")
    if len(text) > MAX_TEXT:
        raise WrongFieldError("", f"at most {MAX_TEXT} characters of JSON")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits, nesting too deep
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise WrongFieldError("", f"JSON ({reason})") from None
    if not isinstance(data, dict):
        raise WrongFieldError("", "a JSON object")
    return data


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def read_fields(cls: type, data: Mapping[str, Any], custom: Mapping[str, Reader] | None = None) -> dict[str, Any]:
    """The dataclass field values of ``data`` (JSON keys in camelCase; unknown keys are ignored: a newer version
    wrote them), each checked against its declared type. Raises WrongFieldError naming the first wrong one."""
    readers = _readers(cls)
    custom = custom or {}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = _names(cls).get(key)
        if name is None:
            continue
        reader = custom.get(name) or readers[name]
        try:
            values[name] = reader(value)
        except _WrongValueError as wrong:
            raise WrongFieldError(key, wrong.expected) from None
        except WrongFieldError as wrong:
            raise WrongFieldError(f"{key}{'.' + wrong.field if wrong.field else ''}", wrong.expected) from None
    return values


def check_declared(cls: type, custom: frozenset[str] = frozenset()) -> list[str]:
    """The fields of ``cls`` whose declared type has no reader (and no custom one): each needs code here."""
    missing = []
    for name, hint in typing.get_type_hints(cls).items():
        if name in custom:
            continue
        try:
            _reader(hint)
        except TypeError:
            missing.append(name)
    return missing


class _WrongValueError(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


@functools.cache
def _names(cls: type) -> dict[str, str]:
    return {camel(f.name): f.name for f in dataclasses.fields(cls)}


@functools.cache
def _readers(cls: type) -> dict[str, Reader]:
    readers: dict[str, Reader] = {}
    for name, hint in typing.get_type_hints(cls).items():
        try:
            readers[name] = _reader(hint)
        except TypeError:
            readers[name] = _unreadable(name, hint)
    return readers


def _unreadable(name: str, hint: object) -> Reader:
    def read(value: Any) -> Any:
        raise _WrongValueError(f"a value this version can read (field {name} of type {hint} has no reader)")

    return read


def _reader(hint: object) -> Reader:
    if hint is str:
        return _text
    if hint is bool:
        return _boolean
    if hint is int:
        return _integer
    if hint is float:
        return _number
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        inner = _reader(next(a for a in args if a is not type(None)))
        return lambda value: None if value is None else inner(value)
    if origin is tuple and args == (str, Ellipsis):
        return _texts
    raise TypeError(f"no JSON reader for {hint!r}")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _WrongValueError("text")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _WrongValueError("true or false")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _WrongValueError("a whole number")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _WrongValueError("a finite number")
    return float(value)


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _WrongValueError("a list of text")
    return tuple(value)
