"""Outbox senders, one module per outbox channel.

The delivery job (`jobs/delivery.py`) sends a row of channel `X` with
`azdev_ica.adapters.notify.X.send(message, settings)`. A sender returns when the other side
accepted the message and raises :class:`DeliveryError` when it did not: `permanent=True` stops
the retries at once (an HTTP 400: sending it again cannot help), `retry_after` asks for a
minimum wait (HTTP `Retry-After`). Any other exception counts as a temporary failure.

The `notify` channel has no sender: the delivery job fans a `notify` row out to the channels
that `ICA_NOTIFY` routes its topic and tenant to (`webhook`, `teams`, `pagerduty`, `email`).

Error texts end up in the outbox's `last_error` and in logs: never put a URL, token or
address in them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings

Sender = Callable[["OutboxMessage", "Settings"], None]

_MODULE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NOT_SENDERS = frozenset({"config", "notify"})


class DeliveryError(Exception):
    """The message was not accepted. `str()` must be safe to store and log (no secrets)."""

    def __init__(
        self, reason: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


def find_sender(channel: str) -> Sender | None:
    """The `send` function of `adapters/notify/<channel>.py`, or None if there is none."""
    if not _MODULE.match(channel) or channel in _NOT_SENDERS:
        return None
    try:
        module = importlib.import_module(f"{__name__}.{channel}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{channel}":
            return None
        raise
    send = getattr(module, "send", None)
    return send if callable(send) else None


def retry_after_seconds(value: str | None, now_epoch: float | None = None) -> float | None:
    """Parse an HTTP `Retry-After` (delta seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    import time

    now = time.time() if now_epoch is None else now_epoch
    return max(0.0, when.timestamp() - now)


def check_http_status(status: int, headers: Any, what: str) -> None:
    """Raise the right :class:`DeliveryError` for a non-2xx answer: 408, 425, 429 and 5xx are
    temporary (with `Retry-After` when given), any other 4xx is permanent."""
    if 200 <= status < 300:
        return
    retry_after = retry_after_seconds(headers.get("retry-after")) if headers is not None else None
    temporary = status in (408, 425, 429) or status >= 500
    raise DeliveryError(
        f"{what} answered HTTP {status}",
        permanent=not temporary,
        retry_after=retry_after if temporary else None,
    )


def message_text(payload: dict[str, Any]) -> str:
    """One human line (plus link) for a notification payload, for chat and e-mail."""
    topic = str(payload.get("topic", "notification"))
    summary = payload.get("summary")
    if not summary:
        where = "/".join(str(payload[k]) for k in ("tenant", "stage") if payload.get(k))
        parts = [topic]
        if where:
            parts.append(f"for {where}")
        if payload.get("run_key"):
            parts.append(f"(run {payload['run_key']})")
        if payload.get("status"):
            parts.append(f"status {payload['status']}")
        summary = " ".join(parts)
    link = payload.get("link")
    return f"[ICA] {summary}" + (f"\n{link}" if link else "")
