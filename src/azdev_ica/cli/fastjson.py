"""`json.loads` and the compact `json.dumps` the pipeline client sends, without importing `json`.

`json` imports `re` (its decoder and encoder compile patterns when imported), and `re` brings
`enum`, `functools` and `collections`: together about a third of what `ica run event` costs
above the interpreter's own start. The parsing and the string escaping are done by `_json`,
the C accelerator `json` itself uses, driven here the way `json.JSONDecoder` drives it.

Whatever this module does not handle exactly as `json` would (an error, a byte-order mark,
a type other than the plain JSON ones, NaN) it hands to `json`, so that every answer and
every error is the one `json` gives (tests/cli/test_fastjson.py holds it to that).

Standard library only, Python 3.8 syntax: it is part of the zipapp ICA serves.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"  # what json.decoder's WHITESPACE pattern skips
_INFINITY = float("inf")


class _Context:
    """The settings json.JSONDecoder() hands to the scanner, at their defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": -_INFINITY,
        "Infinity": _INFINITY,
        "NaN": _INFINITY - _INFINITY,
    }.__getitem__


try:
    import _json
except ImportError:  # an interpreter without the accelerator: `json` does it all
    _scan = None
    _quote = None
else:
    _scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # json passes its decoder
    _quote = _json.encode_basestring_ascii


class _NotPlain(Exception):
    """A value this module leaves to `json`."""


def loads(text: str) -> Any:
    """json.loads(text)."""
    if _scan is not None and type(text) is str and not text.startswith("\ufeff"):
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except (StopIteration, ValueError, RecursionError):
            pass  # json says what is wrong
        else:
            if not text[end:].strip(_WHITESPACE):
                return value
    import json

    return json.loads(text)


def dumps(value: Any) -> str:
    """json.dumps(value, separators=(",", ":"), allow_nan=False)."""
    if _quote is not None:
        parts: list[str] = []
        try:
            _encode(value, parts, set())
        except (_NotPlain, RecursionError):
            pass
        else:
            return "".join(parts)
    import json

    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _encode(value: Any, parts: list[str], open_containers: set[int]) -> None:
    kind = type(value)
    if kind is str:
        parts.append(_quote(value))  # type: ignore[misc]
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif kind is int:
        parts.append(int.__repr__(value))
    elif kind is float:
        if value != value or value in (_INFINITY, -_INFINITY):
            raise _NotPlain  # json refuses it (allow_nan=False) with its own message
        parts.append(float.__repr__(value))
    elif kind is list or kind is tuple or kind is dict:
        if id(value) in open_containers:
            raise _NotPlain  # a circular reference: json says so
        open_containers.add(id(value))
        if kind is dict:
            parts.append("{")
            for number, (key, item) in enumerate(value.items()):
                if type(key) is not str:
                    raise _NotPlain  # json converts or refuses other keys
                if number:
                    parts.append(",")
                parts.append(_quote(key))  # type: ignore[misc]
                parts.append(":")
                _encode(item, parts, open_containers)
            parts.append("}")
        else:
            parts.append("[")
            for number, item in enumerate(value):
                if number:
                    parts.append(",")
                _encode(item, parts, open_containers)
            parts.append("]")
        open_containers.discard(id(value))
    else:
        raise _NotPlain
