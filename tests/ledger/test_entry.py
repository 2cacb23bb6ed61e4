"""Entries: the sealer's textual envelope is exactly the RFC 8785 canonical JSON of the entry."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from azdev_ica.ledger.entry import EntryError, compose_entry, parse_entry

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@given(
    body=bodies,
    index=st.integers(min_value=0, max_value=2**53 - 1),
    origin=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
)
def test_the_envelope_is_the_canonical_json_of_the_whole_entry(body, index, origin):
    composed = compose_entry(rfc8785.dumps(body), index, origin)
    whole = {"body": body, "index": index, "log": origin, "v": 1}
    assert composed == rfc8785.dumps(whole)
    parsed = parse_entry(composed)
    assert (parsed.index, parsed.origin, parsed.body) == (index, origin, body)


def test_control_characters_in_the_origin_are_escaped_as_rfc_8785_does():
    origin = 'a\u0000b\u001fc"\\\n\t\u007f\u2028é'
    assert compose_entry(b"{}", 1, origin) == rfc8785.dumps(
        {"body": {}, "index": 1, "log": origin, "v": 1}
    )


@pytest.mark.parametrize("index", [-1, 2**53])
def test_an_index_beyond_exact_json_numbers_is_refused(index):
    with pytest.raises(EntryError, match="out of range"):
        compose_entry(b"{}", index, "o")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "exactly body, index, log and v"),
        (json.dumps({"body": {}, "index": 1, "log": "o"}).encode(), "exactly"),
        (json.dumps({"body": {}, "index": -1, "log": "o", "v": 1}).encode(), "index"),
        (json.dumps({"body": {}, "index": True, "log": "o", "v": 1}).encode(), "index"),
        (json.dumps({"body": [], "index": 1, "log": "o", "v": 1}).encode(), "body"),
        (json.dumps({"body": {}, "index": 1, "log": "o", "v": 2}).encode(), "version"),
    ],
)
def test_malformed_entries_are_refused(data, message):
    with pytest.raises(EntryError, match=message):
        parse_entry(data)
