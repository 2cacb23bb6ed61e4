"""What the notification senders share: the channel a fanned-out row is for, an HTTP post."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, TypeVar

from azdev_ica.adapters.notify import DeliveryError, check_http_status

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings

C = TypeVar("C")


def channel_config(message: OutboxMessage, settings: Settings, kind: type[C]) -> tuple[str, C]:
    """The destination named in a fanned-out row and its configuration."""
    name = str(message.payload.get("destination", ""))
    config = settings.notify.channels.get(name)
    if not isinstance(config, kind):
        raise DeliveryError(f"channel {name!r} is no longer configured", permanent=True)
    return name, config


def post_json(url: str, body: dict[str, Any], *, timeout: float, what: str) -> None:
    """POST JSON; classify the answer. Errors name `what`, never the URL (it may be a secret).

    Plain `urllib`, not httpx2: httpx2 logs every request's full URL at INFO, and a webhook
    URL is a credential."""
    if not url.startswith(("https://", "http://")):
        raise DeliveryError(f"{what}: the URL is not http(s)", permanent=True)
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "ica-notify"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, exc.headers
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"{what}: {type(exc).__name__}") from None
    check_http_status(status, headers, what)
