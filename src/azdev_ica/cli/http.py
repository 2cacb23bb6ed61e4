"""A small JSON-over-HTTP client for the CLI's calls to ICA: standard library only.

Retries connection errors, timeouts, 429, 502, 503 and 504 with exponential back-off and
jitter (honouring Retry-After), inside one total time budget. Every error it raises carries
the server's RFC 9457 problem document when there is one, and the CLI exit code it means.
Redirects are not followed, so the credential is only ever sent to the configured address.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azdev_ica

RETRY_STATUSES = frozenset({429, 502, 503, 504})
REQUEST_TIMEOUT = 10.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 10.0
MAX_ERROR_TEXT = 300

EXIT_REFUSED = 3
EXIT_AUTH = 4
EXIT_UNAVAILABLE = 5


@dataclass(frozen=True)
class JsonResponse:
    """A successful answer: status, parsed JSON, the body as sent, and how many tries it took."""

    status: int
    data: Any
    text: str
    attempts: int


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
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        refresh: Callable[[], str | None] | None = None,
    ) -> None:
        """`refresh` fetches a new token: a short-lived workload-identity token that ICA
        answers with 401 (it expired during a long `ica approval wait`) is fetched again once
        and the request repeated."""
        parsed = urllib.parse.urlsplit(base_url)
        try:
            parsed.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("the URL's port is not a number") from None
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(base_url)!r}")
        if timeout <= 0:
            raise ValueError("the timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._refresh = refresh
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._sleep = sleep
        self._rng = rng
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        return f"Client({redact_url(self.base_url)!r}, token={'***' if self._token else None})"

    def post_json(
        self, path: str, body: Mapping[str, Any], idempotency_key: str | None
    ) -> JsonResponse:
        """POST `body`; the same Idempotency-Key goes with every retry of this one call."""
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        return self._call("POST", path, payload, headers)

    def get_json(self, path: str) -> JsonResponse:
        """GET `path` and parse the JSON answer."""
        return self._call("GET", path, None, {})

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
            # The scheme was checked in __init__: only http and https reach this point.
            request = urllib.request.Request(  # noqa: S310
                url, data=payload, headers=headers, method=method
            )
            failure: IcaHttpError
            retry_after: float | None = None
            try:
                status, text, retry_after_header = self._send(
                    request, min(self.request_timeout, max(remaining, 0.001))
                )
            except _Retryable as exc:
                failure = Unreachable(
                    f"ICA at {redact_url(self.base_url)} is unreachable: {exc.reason}",
                    attempts=attempt,
                )
            else:
                if 200 <= status < 300:
                    return JsonResponse(status, _parse_success(text, attempt), text, attempt)
                failure = _problem_error(status, text, attempt)
                if status == 401 and self._refresh is not None and not refreshed:
                    refreshed = True
                    self._token = self._refresh()
                    continue
                if status not in RETRY_STATUSES:
                    raise failure
                retry_after = _retry_after(retry_after_header)
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

    def _send(self, request: urllib.request.Request, timeout: float) -> tuple[int, str, str | None]:
        """One exchange: (status, body, Retry-After); raises _Retryable when nothing came back."""
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, _decode(response.read()), None
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except (OSError, http.client.HTTPException):
                body = b""
            finally:
                exc.close()
            return exc.code, _decode(body), exc.headers.get("Retry-After")
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise Unreachable(
                    f"TLS verification of {redact_url(self.base_url)} failed: {exc.reason}"
                ) from None
            raise _Retryable(str(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            # Timeouts, resets and truncated answers: the request may or may not have
            # landed, which is why every write carries an Idempotency-Key.
            raise _Retryable(_describe(exc)) from None

    def _backoff(self, attempt: int) -> float:
        """Exponential back-off with "equal jitter": half fixed, half random."""
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt - 1, 30))
        return ceiling / 2 + ceiling / 2 * self._rng()


class _Retryable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        fp.close()
        raise BadResponse(
            f"ICA answered {code} with a redirect to {redact_url(newurl)}; set the URL to "
            "the final address (redirects are not followed, so the token goes nowhere else)"
        )


def _decode(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse_success(text: str, attempts: int) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BadResponse(
            f"ICA answered with something that is not JSON: {_one_line(text)[:MAX_ERROR_TEXT]!r}",
            attempts=attempts,
        ) from None


def _problem_error(status: int, text: str, attempts: int) -> ProblemError:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "title" in parsed:
        problem: dict[str, Any] = parsed
    else:
        # Not a problem document: a proxy's HTML page, or an empty body.
        reason = http.client.responses.get(status, "HTTP error")
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
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def redact_url(url: str) -> str:
    """`url` without any user:password part, fit for messages and logs."""
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
        return Client(url, credential.token, timeout=timeout)
    return Client(
        url,
        credential.token,
        timeout=timeout,
        refresh=lambda: identity.resolve(env, timeout=timeout).token,
    )
