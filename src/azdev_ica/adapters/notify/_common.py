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


# --- posting with a credential ---------------------------------------------------------------

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a URL's hostname) is this machine: only then may a credential travel
    over plain http."""
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def credential_url_problem(url: str) -> str | None:
    """Why a credential may not be sent to `url`, or None: https, or http on loopback only."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return None
    if parts.scheme == "http":
        return "the URL is plain http (https is required off loopback)"
    return "the URL is not https"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the request carries a credential, and a redirect may lead
    anywhere (an Azure DevOps sign-in page, a host of an attacker's choosing). The 3xx is
    handed back as the answer, and judged a failure."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def post_with_credential(
    url: str, data: bytes | None, headers: dict[str, str], *, timeout: float, what: str
) -> tuple[int, Any, bytes]:
    """POST with a credential in `headers`, following no redirect; the status, headers and
    (at most 64 KiB of) body. Errors name `what`, never the URL or the credential."""
    problem = credential_url_problem(url)
    if problem is not None:
        raise DeliveryError(f"{what}: {problem}", permanent=True)
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=data, headers=headers, method="POST"
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read(65536)
    except urllib.error.HTTPError as exc:
        status, answer_headers = exc.code, exc.headers
        exc.close()
        return status, answer_headers, b""
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"{what}: {type(exc).__name__}") from None


def check_api_answer(status: int, headers: Any, what: str) -> None:
    """Judge the answer of an API that may send a sign-in page instead of a 401: besides
    `check_http_status`, a 203 (Azure DevOps's "Non-Authoritative Information" sign-in page),
    any 3xx (a redirect to sign in, never followed) and an HTML page with a 2xx are failures,
    permanent ones: the credential was not accepted, and sending it again will not change
    that."""
    if status == 203 or 300 <= status < 400:
        raise DeliveryError(
            f"{what} answered HTTP {status} (a sign-in page or redirect: the token was not "
            "accepted)",
            permanent=True,
        )
    content_type = (headers.get("content-type") or "") if headers is not None else ""
    if 200 <= status < 300 and content_type.split(";", 1)[0].strip().lower() in (
        "text/html",
        "application/xhtml+xml",
    ):
        raise DeliveryError(
            f"{what} answered HTTP {status} with an HTML page (a sign-in page: the token was "
            "not accepted)",
            permanent=True,
        )
    check_http_status(status, headers, what)
