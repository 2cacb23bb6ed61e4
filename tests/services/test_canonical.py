"""services/canonical.dumps gives exactly what rfc8785.dumps gives: the same bytes, or the same
refusal. Audit records already sealed and idempotency fingerprints already stored were written
by rfc8785; a byte of difference would break a retry's match or a ledger's meaning."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from azdev_ica.services.canonical import dumps

SAFE = 2**53 - 1


def _reference(value: Any) -> bytes | type[BaseException]:
    try:
        return bytes(rfc8785.dumps(value))
    except Exception as exc:  # the refusal's type is what is compared
        return type(exc)


def _ours(value: Any) -> bytes | type[BaseException]:
    try:
        return dumps(value)
    except Exception as exc:
        return type(exc)


# Floats where Python's repr and ECMAScript's number form part ways: integral values, the
# exponent thresholds on both sides (1e-7 / 1e-4 and 1e16 / 1e21), zero's sign, the limits.
EDGE_FLOATS = [
    0.0, -0.0, 1.0, -2.0, 0.5, 87.5, 1e-4, 9.999e-5, 1e-5, 1e-6, 1e-7, 1.5e-7, 1e-8,
    123456789012345.6, 1e15, 1e16, 1.5e16, 9.99e15, 1e20, 1e21, 1.5e21, 1e22, 5e-324,
    1.7976931348623157e308, 2**53 + 0.0, 0.1 + 0.2, 1 / 3, math.inf, -math.inf, math.nan,
]  # fmt: skip
EDGE_INTS = [0, 1, -1, SAFE, -SAFE, SAFE + 1, -SAFE - 1, 2**64, -(2**64)]
EDGE_STRINGS = [
    "", "plain", 'quote " and \\ backslash', "\b\f\n\r\t", "\x00\x01\x1f\x7f", "é ü ñ",
    "\u2028\u2029", "\uffff", "\U0001f600 astral", "\ud800 lone surrogate", "\udfff",
]  # fmt: skip


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Phase(enum.StrEnum):
    BUILD = "build"


@pytest.mark.parametrize(
    "value",
    [
        *EDGE_FLOATS,
        *EDGE_INTS,
        *EDGE_STRINGS,
        None,
        True,
        False,
        [],
        {},
        (1, "two"),
        {"b": 1, "a": [1.5, None, True], "c": {"z": "", "y": -0.0}},
        # Keys whose UTF-16 order is not their code-point order.
        {"\U0001f600": 1, "\uff61": 2, "a": 3},
        {"\ufb33": 1, "\U00010000": 2},
        {"\ud800": 1},
        {1: "a non-string key"},
        {True: "a boolean key"},
        {None: "a null key"},
        {"phase": Phase.BUILD, "level": Level.HIGH},
        Phase.BUILD,
        Level.HIGH,
        Colour.RED,
        {"a": Colour.RED},
        b"bytes",
        {1.5},
        [[[[[]]]]],
        {"data": {"passed": True, "coverage_percent": 87.5, "total": 420, "failed": 0}},
    ],
)
def test_the_same_bytes_or_the_same_refusal(value: Any) -> None:
    assert _ours(value) == _reference(value)


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.sampled_from(EDGE_INTS)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(EDGE_FLOATS)
    | st.text()
    | st.sampled_from(EDGE_STRINGS)
)
KEYS = st.text() | st.sampled_from(EDGE_STRINGS) | st.sampled_from(["\U0001f600", "\uff61"])
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1000, deadline=None)
@given(JSON_VALUES)
@example({"float": 1e16, "int": SAFE + 1})
def test_any_json_value_matches_rfc8785(value: Any) -> None:
    assert _ours(value) == _reference(value)
