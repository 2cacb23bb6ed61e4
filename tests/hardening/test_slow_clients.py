"""Slow clients cannot take all of the server's concurrency when ICA is served as `ica serve`
serves it: a connection that sends no complete request within the read timeout is closed,
so its share of `--limit-concurrency` comes back. Loopback only, a bounded loop, no timing
assertion: the test waits (at most a bounded while) for the server to serve again."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

LIMIT = 8
SLOW = LIMIT + 4


# `ica serve` runs httptools when it is installed and h11 otherwise: both are held to the rules.
PROTOCOLS = [
    "azdev_ica.api.serving_httptools:DeadlineHttpToolsProtocol",
    "azdev_ica.api.serving:DeadlineH11Protocol",
]


@pytest.fixture(params=PROTOCOLS, ids=["httptools", "h11"])
def served(app: Any, monkeypatch: pytest.MonkeyPatch, request: Any) -> Iterator[str]:
    from azdev_ica.api.serving import READ_TIMEOUT_ENV, http_protocol, uvicorn_options

    assert http_protocol() == PROTOCOLS[0]  # httptools is a dependency
    monkeypatch.setenv(READ_TIMEOUT_ENV, "1")
    options = uvicorn_options(limit_concurrency=LIMIT, timeout_keep_alive=5, trusted_proxies=[])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        **{**options, "http": request.param},
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(3000):
        if server.started:
            break
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def _status(url: str) -> int:
    """The status of GET /health; 0 when no answer came in time (the machine may be busy)."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_slow_clients_cannot_hold_the_servers_concurrency(served):
    port = int(served.rsplit(":", 1)[1])
    slow = []
    for _ in range(SLOW):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        # Half a request, and then nothing: the slowloris pattern.
        sock.sendall(b"POST /api/v1/azdev/run/start HTTP/1.1\r\nHost: ica\r\nX-Slow: 1")
        slow.append(sock)
    try:
        answers = []
        for _ in range(120):  # bounded: well past the 1-second read timeout
            answers.append(_status(served))
            if answers[-1] == 200:
                break
            time.sleep(0.25)
        assert answers[-1] == 200, answers
        # The server closed the slow connections itself.
        for sock in slow:
            sock.settimeout(30)
            assert sock.recv(1024) == b""
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_request_that_arrives_whole_is_served_as_usual(served):
    assert _status(served) == 200
    assert _status(served) == 200  # a second connection, and nothing lingered


def _answer(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_request_head_that_grows_past_the_limit_is_refused(served):
    from azdev_ica.api.serving import MAX_HEADER_BYTES

    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # A head past the limit that has not ended yet: the server must not wait for more.
        line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: ica\r\n" + line * (MAX_HEADER_BYTES // 900))
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    # A head within the limit is served.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        filler = b"X-Filler: " + b"f" * (MAX_HEADER_BYTES // 2) + b"\r\n"
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: ica\r\nConnection: close\r\n" + filler + b"\r\n"
        )
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
