"""Reading the console's filter forms (GET query strings): empty fields are no filter, a date
field (`YYYY-MM-DD`, what `<input type="date">` sends) is a UTC day, bad input is a 422
problem the error page shows in words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from fastapi import Request

from azdev_ica.errors import ValidationProblem

MAX_FIELD = 200


def field(request: Request, name: str, *, choices: tuple[str, ...] | None = None) -> str | None:
    """A query field's value, stripped; None when absent or empty."""
    value = request.query_params.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_FIELD or not value.isprintable():
        raise ValidationProblem(f"{name}: at most {MAX_FIELD} printable characters")
    if choices is not None and value not in choices:
        raise ValidationProblem(f"{name}: one of {', '.join(choices)}")
    return value


def day(request: Request, name: str) -> date | None:
    value = field(request, name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationProblem(f"{name}: a date as YYYY-MM-DD") from None


def day_start(value: date | None) -> datetime | None:
    return None if value is None else datetime(value.year, value.month, value.day, tzinfo=UTC)


def day_end(value: date | None) -> datetime | None:
    """The end of a day the person named as the last one (exclusive bound: the next day)."""
    start = day_start(value)
    return None if start is None else start + timedelta(days=1)


def positive(request: Request, name: str, *, maximum: int) -> int | None:
    value = field(request, name)
    if value is None:
        return None
    if not value.isdigit() or not 0 < int(value) <= maximum:
        raise ValidationProblem(f"{name}: a whole number from 1 to {maximum}")
    return int(value)


@dataclass(frozen=True)
class Pager:
    """The link to the next page: the same filters with the cursor the query returned."""

    next_url: str | None


def next_page(request: Request, cursor: str | int | None) -> Pager:
    if cursor is None:
        return Pager(None)
    params = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    params["cursor"] = str(cursor)
    return Pager(f"{request.url.path}?{urlencode(params)}")
