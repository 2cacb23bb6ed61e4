"""A small JSON-over-HTTP client for the CLI's calls to ICA: standard library only.

Retries connection errors, timeouts, 429, 502, 503 and 504 with exponential back-off and
jitter (honouring Retry-After), inside one total time budget. Every error it raises carries
the server's RFC 9457 problem document when there is one, and the CLI exit code it means.
Redirects are not followed, so the credential is only ever sent to the configured address.

It starts fast (cli/wire.py speaks HTTP itself: no `http.client`, `email`, `ssl`, `socket`
or `urllib.parse` import for a plain http:// address, and no `typing`) and keeps to Python
3.8 syntax: it is part of the served zipapp.
"""

from __future__ import annotations

import os
import sys
import time

import azdev_ica
from azdev_ica.cli import fastjson, wire

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:  # (collections.abc imports `collections`: annotations only)
    from collections.abc import Callable, Mapping
    from typing import Any

RETRY_STATUSES = frozenset({429, 502, 503, 504})
REQUEST_TIMEOUT = 10.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 10.0
MAX_ERROR_TEXT = 300

EXIT_REFUSED = 3
EXIT_AUTH = 4
EXIT_UNAVAILABLE = 5
EXIT_USAGE = 64


class JsonResponse:
    """A successful answer: status, parsed JSON, the body as sent, and how many tries it took.

    (A plain class: `dataclasses` imports `inspect`, which costs more than the rest.)"""

    __slots__ = ("attempts", "data", "headers", "status", "text")

    def __init__(
        self,
        status: int,
        data: Any,
        text: str,
        attempts: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.data = data
        self.text = text
        self.attempts = attempts
        # The answer's headers, names in lower case (ETag, Retry-After for a poller).
        self.headers: Mapping[str, str] = headers or {}

    def __repr__(self) -> str:
        return f"JsonResponse(status={self.status}, attempts={self.attempts})"


class IcaHttpError(Exception):
    """Base of the client's errors; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_UNAVAILABLE

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


class ProblemError(IcaHttpError):
    """ICA answered with an error status; `problem` is its problem document."""

    def __init__(self, status: int, problem: dict[str, Any], text: str, *, attempts: int) -> None:
        self.status = status
        self.problem = problem
        self.text = text
        title = str(problem.get("title") or f"HTTP {status}")
        detail = problem.get("detail")
        message = f"{status} {title}" + (f": {detail}" if detail else "")
        super().__init__(_one_line(message), attempts=attempts)

    @property
    def title(self) -> str:
        return str(self.problem.get("title") or f"HTTP {self.status}")

    @property
    def detail(self) -> str | None:
        detail = self.problem.get("detail")
        return None if detail is None else str(detail)


class RequestRefused(ProblemError):
    """A 4xx other than 401/403: the request is invalid or conflicts with recorded state."""

    exit_code = EXIT_REFUSED


class AuthRefused(ProblemError):
    """401 or 403: the credential is missing, wrong, or lacks the permission."""

    exit_code = EXIT_AUTH


class ServerFailed(ProblemError):
    """A 5xx answer (after retries when it was a retryable one)."""

    exit_code = EXIT_UNAVAILABLE


class Unreachable(IcaHttpError):
    """No answer at all: connection refused, DNS, TLS, timeouts; after retries."""


class BadResponse(IcaHttpError):
    """An answer the client cannot use: a redirect, or a success that is not JSON."""


class Unsendable(IcaHttpError):
    """The request cannot be sent as given: a line break or NUL in the token or a header
    (a secret pasted with its newline). A usage error: nothing was sent, retrying won't help."""

    exit_code = EXIT_USAGE


class Client:
    """Calls ICA at `base_url` with a bearer token, retrying within `timeout` seconds in total."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 60.0,
        request_timeout: float = REQUEST_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh: Callable[[], str | None] | None = None,
    ) -> None:
        """`refresh` fetches a new token: a short-lived workload-identity token that ICA
        answers with 401 (it expired during a long `ica approval wait`) is fetched again once
        and the request repeated."""
        try:
            wire.split_url(base_url)
        except ValueError as exc:
            if "port" in str(exc):
                raise
            raise ValueError(f"not an http(s) URL: {redact_url(base_url)!r}") from None
        if timeout <= 0:
            raise ValueError("the timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._refresh = refresh
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._sleep = sleep
        self._rng = rng or _random
        self._clock = clock

    def __repr__(self) -> str:
        return f"Client({redact_url(self.base_url)!r}, token={'***' if self._token else None})"

    def post_json(
        self, path: str, body: Mapping[str, Any], idempotency_key: str | None
    ) -> JsonResponse:
        """POST `body`; the same Idempotency-Key goes with every retry of this one call."""
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        payload = fastjson.dumps(body).encode()  # json.dumps(body, separators=(",", ":"), ...)
        return self._call("POST", path, payload, headers)

    def get_json(self, path: str, *, etag: str | None = None) -> JsonResponse:
        """GET `path` and parse the JSON answer. With `etag` (a conditional request,
        If-None-Match), an unchanged resource answers 304: status 304 and data None."""
        return self._call("GET", path, None, {} if etag is None else {"If-None-Match": etag})

    def _call(
        self, method: str, path: str, payload: bytes | None, extra: dict[str, str]
    ) -> JsonResponse:
        url = self.base_url + path
        headers = {
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"ica-pipeline/{azdev_ica.__version__}",
            **extra,
        }
        deadline = self._clock() + self.timeout
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            remaining = deadline - self._clock()
            failure: IcaHttpError
            retry_after: float | None = None
            try:
                status, text, answer_headers = self._send(
                    method, url, payload, headers, min(self.request_timeout, max(remaining, 0.001))
                )
            except wire.NoAnswer as exc:
                # Timeouts, resets and truncated answers: the request may or may not have
                # landed, which is why every write carries an Idempotency-Key.
                failure = Unreachable(
                    f"ICA at {redact_url(self.base_url)} is unreachable: {exc}",
                    attempts=attempt,
                )
            else:
                if 200 <= status < 300:
                    data = _parse_success(text, attempt)
                    return JsonResponse(status, data, text, attempt, answer_headers)
                if status == 304 and "If-None-Match" in headers:
                    return JsonResponse(status, None, text, attempt, answer_headers)
                failure = _problem_error(status, text, attempt)
                if status == 401 and self._refresh is not None and not refreshed:
                    refreshed = True
                    self._token = self._refresh()
                    continue
                if status not in RETRY_STATUSES:
                    raise failure
                retry_after = _retry_after(answer_headers.get("retry-after"))
            delay = self._backoff(attempt)
            if retry_after is not None:
                delay = max(delay, retry_after)
            if self._clock() + delay >= deadline:
                failure.message += (
                    f" (gave up after {attempt} attempt{'s' if attempt > 1 else ''} "
                    f"within {self.timeout:g} s)"
                )
                failure.args = (failure.message,)
                raise failure
            self._sleep(delay)

    def _send(
        self, method: str, url: str, payload: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, str, dict[str, str]]:
        """One exchange: (status, body, headers); raises wire.NoAnswer when nothing came
        back."""
        try:
            status, answer_headers, body = wire.exchange(method, url, payload, headers, timeout)
        except ValueError as exc:
            raise Unsendable(str(exc)) from None
        except wire.CertificateRefused as exc:
            raise Unreachable(
                f"TLS verification of {redact_url(self.base_url)} failed: {exc}"
            ) from None
        if 300 <= status < 400 and not (status == 304 and "If-None-Match" in headers):
            location = answer_headers.get("location", "")
            raise BadResponse(
                f"ICA answered {status} with a redirect to {redact_url(location)}; set the URL "
                "to the final address (redirects are not followed, so the token goes nowhere "
                "else)"
            )
        return status, _decode(body), answer_headers

    def _backoff(self, attempt: int) -> float:
        """Exponential back-off with "equal jitter": half fixed, half random."""
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt - 1, 30))
        return ceiling / 2 + ceiling / 2 * self._rng()


def _decode(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _parse_success(text: str, attempts: int) -> Any:
    try:
        return fastjson.loads(text)
    except ValueError:
        raise BadResponse(
            f"ICA answered with something that is not JSON: {_one_line(text)[:MAX_ERROR_TEXT]!r}",
            attempts=attempts,
        ) from None


def _problem_error(status: int, text: str, attempts: int) -> ProblemError:
    try:
        parsed = fastjson.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "title" in parsed:
        problem: dict[str, Any] = parsed
    else:
        # Not a problem document: a proxy's HTML page, or an empty body.
        reason = _REASONS.get(status, "HTTP error")
        snippet = _one_line(text)[:MAX_ERROR_TEXT]
        problem = {"title": reason, "status": status}
        if snippet:
            problem["detail"] = snippet
    kind: type[ProblemError]
    if status in (401, 403):
        kind = AuthRefused
    elif 400 <= status < 500:
        kind = RequestRefused
    else:
        kind = ServerFailed
    return kind(status, problem, text, attempts=attempts)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # only for the rare HTTP-date form
    from datetime import datetime, timezone

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


# Reason phrases for answers that carry no problem document (http.client.responses, in part).
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _random() -> float:
    import random  # only when a retry waits

    return random.random()  # jitter, not a secret


def idempotency_key() -> str:
    """A fresh `ica-cli-<uuid4>` (formatted here: the `uuid` module costs more to import)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"ica-cli-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def redact_url(url: str) -> str:
    """`url` without any user:password part, fit for messages and logs."""
    if "@" not in url:
        return url
    import urllib.parse  # only to take credentials out of a message

    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def client_from_env(url: str, env: Mapping[str, str], *, timeout: float = 60.0) -> Client:
    """A client for `url` with the credential the environment offers: Azure workload identity,
    GitHub OIDC, or ICA_TOKEN (cli/identity.py). Raises ValueError on a bad URL and an
    IcaHttpError when a workload-identity token cannot be had."""
    from azdev_ica.cli import identity

    Client(url, None, timeout=timeout)  # validate the URL before any token is asked for
    credential = identity.resolve(env, timeout=timeout)
    if credential.source == "ICA_TOKEN":
        if not credential.token:
            # Said before the request, which ICA then refuses (401, exit 4).
            print(
                "ica: ICA_TOKEN is not set: this command works over HTTP and needs ICA_TOKEN "
                "(an API key, or your personal token to sign) besides ICA_URL",
                file=sys.stderr,
            )
        return Client(url, credential.token, timeout=timeout)
    return Client(
        url,
        credential.token,
        timeout=timeout,
        refresh=lambda: identity.resolve(env, timeout=timeout, fresh=True).token,
    )
