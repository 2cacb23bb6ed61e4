"""How `ica serve` runs uvicorn: bounded concurrency, short keep-alive, and a deadline for
reading each request.

uvicorn has no timeout for reading a request's headers or body: a client that sends one
byte every few seconds holds its connection, and its share of `--limit-concurrency`, for
as long as it likes, so a few hundred slow clients starve everyone else. In production ICA
runs behind a reverse proxy that buffers requests with header and body timeouts (README,
"Serving"); `DeadlineH11Protocol` is the same rule inside ICA, for the embedded default
and as a second line behind the proxy: a connection that has not delivered a complete
request within the read timeout of its first byte (or of its opening) is closed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

READ_TIMEOUT_ENV = "ICA_REQUEST_READ_TIMEOUT_SECONDS"
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_LIMIT_CONCURRENCY = 200
DEFAULT_KEEP_ALIVE = 5
# Request line plus headers, in bytes (uvicorn's h11 default is 16 KiB as well); bodies are
# capped by the application (api/limits.py, 256 KiB).
MAX_HEADER_BYTES = 16 * 1024


def read_timeout() -> float:
    """The read deadline from the environment (`ica serve --read-timeout` sets it, so worker
    processes inherit it)."""
    try:
        value = float(os.environ.get(READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT))
    except ValueError:
        return DEFAULT_READ_TIMEOUT
    return value if value > 0 else DEFAULT_READ_TIMEOUT


class ReadDeadline:
    """The read deadline both protocols share: armed when a connection opens and when the
    first bytes of a request arrive, cancelled once the whole request is in (each protocol
    says when that is) or when the connection is lost. Mixed in before uvicorn's protocol
    class, whose methods it extends."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    logger: logging.Logger
    cycle: Any
    read_timeout: float
    _read_deadline: asyncio.TimerHandle | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout()
        self._read_deadline = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        between_requests = self.cycle is None or self.cycle.response_complete
        if self._read_deadline is None and between_requests:
            self._arm_read_deadline()  # the first bytes of the next request on this connection
        super().data_received(data)  # type: ignore[misc]

    def _response_started(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return bool(cycle is not None and cycle.response_started)

    def _arm_read_deadline(self) -> None:
        self._cancel_read_deadline()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self._response_started():
            return  # the application already answered (say, a 413); let it finish
        self.logger.info("closing a connection that sent no complete request in time")
        self.transport.close()


class DeadlineH11Protocol(ReadDeadline, H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request (see the module)."""

    def handle_events(self) -> None:
        super().handle_events()
        reading = self.cycle is None or self.cycle.response_complete or self.cycle.more_body
        if not reading:
            self._cancel_read_deadline()  # the whole request is in


def http_protocol() -> str:
    """The protocol `ica serve` runs: httptools when installed (a dependency; its C parser costs
    less per request), h11 otherwise, both with the read deadline and the header limit above.
    An import string, so that worker processes (`--workers N`) can load it."""
    if importlib.util.find_spec("httptools") is not None:
        return "azdev_ica.api.serving_httptools:DeadlineHttpToolsProtocol"
    return "azdev_ica.api.serving:DeadlineH11Protocol"


def uvicorn_options(
    *,
    limit_concurrency: int,
    timeout_keep_alive: int,
    trusted_proxies: list[Any],
) -> dict[str, Any]:
    """The uvicorn settings `ica serve` runs with (and the slow-client test serves with)."""
    forwarded = ",".join(str(network) for network in trusted_proxies)
    return {
        "http": http_protocol(),
        # uvloop when installed (a dependency on POSIX systems), asyncio otherwise.
        "loop": "auto",
        "limit_concurrency": limit_concurrency,
        "timeout_keep_alive": timeout_keep_alive,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        # X-Forwarded-For/-Proto are believed only from ICA_TRUSTED_PROXIES (none: never).
        "proxy_headers": bool(forwarded),
        "forwarded_allow_ips": forwarded or None,
        "server_header": False,
    }
