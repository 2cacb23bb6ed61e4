"""cli/fastjson.py answers what `json` answers: the same value, the same text, the same error.

`ica run event` parses and writes its JSON with it (no `json` import, which brings `re`); a
difference from `json` would be a silent change of what pipelines send and read."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.cli import fastjson

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def outcome(function: Any, argument: Any) -> tuple[str, Any]:
    """What calling `function` gives: ("value", result) or ("error", type and message)."""
    try:
        return "value", function(argument)
    except (ValueError, TypeError, RecursionError) as exc:
        return "error", (type(exc), str(exc))


def same(left: tuple[str, Any], right: tuple[str, Any]) -> bool:
    """Equal outcomes, NaN equal to NaN (json gives NaN for "NaN")."""
    return json.dumps(left, default=repr) == json.dumps(right, default=repr)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


@settings(deadline=None, max_examples=300)  # no timing: the machine is shared
@given(VALUES)
def test_dumps_writes_what_json_writes(value):
    assert same(outcome(fastjson.dumps, value), outcome(compact, value))


@settings(deadline=None, max_examples=300)
@given(VALUES)
def test_loads_reads_what_json_reads(value):
    text = json.dumps(value)  # NaN and Infinity written as json writes them
    assert same(outcome(fastjson.loads, text), outcome(json.loads, text))
    spaced = json.dumps(value, indent=2)
    assert same(outcome(fastjson.loads, f" \r\n\t{spaced}\n "), outcome(json.loads, spaced))


@settings(deadline=None, max_examples=500)
@given(
    st.text(alphabet='{}[]",:.-+eE0123456789 \t\n\rtrufalsenNIy\\/\ufeff\x00\u00e9', max_size=24)
    | st.text(max_size=12)
)
def test_loads_fails_as_json_fails(text):
    assert same(outcome(fastjson.loads, text), outcome(json.loads, text))


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "{",
        '{"a": 1} x',
        '{"a": 1}{"b": 2}',
        "[1,]",
        "\ufeff{}",
        '"\\ud800"',
        "NaN",
        "-Infinity",
        "1e400",
        "0123",
        '{"a": "b\nc"}',  # a raw control character in a string (strict)
        "[" * 50_000 + "]" * 50_000,  # too deep
        "true false",
        "  17  ",
    ],
)
def test_the_edges_of_loads(text):
    assert same(outcome(fastjson.loads, text), outcome(json.loads, text))


class Colour(IntEnum):
    RED = 1


def test_what_is_not_plain_json_is_written_by_json_itself():
    loop: list[Any] = []
    loop.append(loop)
    for value in (
        [math.nan],
        {"x": math.inf},
        {1: "a", None: "b", 2.5: "c"},  # keys json converts
        {True: "d"},
        {(1, 2): "a"},  # a key json refuses
        loop,
        Colour.RED,
        OrderedDict(a=1),
        {"a": {1, 2}},  # a set: TypeError
        b"bytes",
    ):
        assert same(outcome(fastjson.dumps, value), outcome(compact, value)), value


def test_the_pipeline_body_is_the_bytes_json_makes():
    body = {
        "run_key": "ado:p:1",
        "phase": "test",
        "data": {"passed": True, "count": 3, "ratio": 0.25, "name": 'é\u2028"x"', "n": None},
        "attempt": 2,
    }
    assert fastjson.dumps(body) == compact(body)
    assert fastjson.dumps(body).isascii()


def test_without_the_accelerator_json_does_it_all(monkeypatch):
    monkeypatch.setattr(fastjson, "_scan", None)
    monkeypatch.setattr(fastjson, "_quote", None)
    assert fastjson.loads('{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    assert fastjson.dumps({"a": [1, 2.5, "x"]}) == '{"a":[1,2.5,"x"]}'
    with pytest.raises(json.JSONDecodeError):
        fastjson.loads("{")
