"""GitHub custom deployment protection rule: answer the waiting run (pipelines.md §4.2).

    1. a GitHub App JWT (RS256; iss = app id, iat = now - 60 s, exp = now + 9 min)
    2. POST {api}/app/installations/{installation_id}/access_tokens   -> 201 {"token", ...}
    3. POST {deployment_callback_url}                                  -> 204
       (= {api}/repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule)
       Authorization: Bearer {installation token}
       Accept: application/vnd.github+json; X-GitHub-Api-Version: 2022-11-28
       {"environment_name": ..., "state": "approved" | "rejected", "comment": ...}

The installation token is minted per message and never stored. It is sent only to the
configured GitHub API (`ICA_GITHUB_API_URL`: same scheme, host, port and path prefix): a
callback URL anywhere else fails the message at once and nothing is sent, as
`ICA_ADO_CALLBACK_HOSTS` protects an Azure DevOps check's token. The JWT uses the wall clock:
GitHub checks it against its own.

Like the Azure DevOps callback, a request that carries a credential never follows a
redirect (GitHub answers a renamed repository with a 301/307 to its new place; the token
must not travel there unasked), goes over https only (plain http to loopback only), and a
203, any 3xx or an HTML page with a 2xx counts as a failure.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt

from azdev_ica.adapters.notify import DeliveryError
from azdev_ica.adapters.notify._common import check_api_answer, post_with_credential

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings

TIMEOUT = 10.0
WHAT = "GitHub deployment review"
API_VERSION = "2022-11-28"
ACCEPT = "application/vnd.github+json"
JWT_LIFE_SECONDS = 540  # GitHub refuses an exp more than 10 minutes ahead
_CALLBACK_PATH = re.compile(
    r"^/repos/[^/]+/[^/]+/actions/runs/[0-9]{1,20}/deployment_protection_rule$"
)


def send(message: OutboxMessage, settings: Settings) -> None:
    payload = message.payload
    api = settings.github_api_url.rstrip("/")
    url = str(payload.get("url", ""))
    if not on_api(url, api):
        raise DeliveryError(
            f"{WHAT}: the callback URL is not on the configured GitHub API", permanent=True
        )
    body = {
        "environment_name": str(payload["environment_name"]),
        "state": str(payload["state"]),
        "comment": str(payload.get("comment") or ""),
    }
    token = installation_token(settings, int(payload["installation_id"]))
    status, headers, _ = _post(url, body, token)
    check_api_answer(status, headers, WHAT)


def on_api(url: str, api: str) -> bool:
    """Whether `url` is a deployment review URL of the GitHub API at `api`."""
    target, base = urlsplit(url), urlsplit(api)
    if target.scheme not in ("https", "http") or target.query or target.fragment:
        return False
    if (target.scheme, target.netloc.lower()) != (base.scheme, base.netloc.lower()):
        return False
    prefix = base.path.rstrip("/")
    if not target.path.startswith(prefix + "/repos/"):
        return False
    return _CALLBACK_PATH.match(target.path[len(prefix) :]) is not None


def app_jwt(settings: Settings, now: float | None = None) -> str:
    """The GitHub App's own JWT, signed with its private key (RS256)."""
    if settings.github_app_id is None or settings.github_app_private_key_file is None:
        raise DeliveryError(
            f"{WHAT}: the GitHub App is not configured (ICA_GITHUB_APP_ID, "
            "ICA_GITHUB_APP_PRIVATE_KEY_FILE)",
            permanent=True,
        )
    try:
        key = settings.github_app_private_key_file.read_bytes()
    except OSError as exc:
        raise DeliveryError(
            f"{WHAT}: the GitHub App key cannot be read ({type(exc).__name__})"
        ) from None
    issued = int(time.time() if now is None else now)
    claims = {
        "iat": issued - 60,
        "exp": issued + JWT_LIFE_SECONDS,
        "iss": str(settings.github_app_id),
    }
    try:
        return jwt.encode(claims, key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError):
        raise DeliveryError(
            f"{WHAT}: the GitHub App key is not an RSA key", permanent=True
        ) from None


def installation_token(settings: Settings, installation_id: int) -> str:
    """A fresh installation access token (valid one hour; used once, never stored)."""
    url = f"{settings.github_api_url.rstrip('/')}/app/installations/{installation_id}/access_tokens"
    status, headers, raw = _post(url, None, app_jwt(settings))
    check_api_answer(status, headers, f"{WHAT} (installation token)")
    try:
        token = json.loads(raw)["token"]
    except (ValueError, KeyError, TypeError):
        raise DeliveryError(f"{WHAT}: the installation token answer is not readable") from None
    if not isinstance(token, str) or not token:
        raise DeliveryError(f"{WHAT}: the installation token answer is not readable")
    return token


def _post(url: str, body: dict[str, Any] | None, bearer: str) -> tuple[int, Any, bytes]:
    """POST to GitHub; errors name `WHAT` only (never the URL or a token)."""
    headers = {
        "Accept": ACCEPT,
        "Authorization": f"Bearer {bearer}",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": "ica-github-review",
    }
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    return post_with_credential(url, data, headers, timeout=TIMEOUT, what=WHAT)
