"""Several cases walked in one test on the same app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def case(label: Any) -> Iterator[None]:
    """One case of a test that walks several on the same app (an app, its database and its
    key are made once per test, not once per case): a failure names its case."""
    try:
        yield
    except AssertionError as failure:
        raise AssertionError(f"case {label!r}: {failure}") from failure
