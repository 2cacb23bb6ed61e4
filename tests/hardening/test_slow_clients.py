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


@pytest.fixture
def served(app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from azdev_ica.api.serving import READ_TIMEOUT_ENV, uvicorn_options

    monkeypatch.setenv(READ_TIMEOUT_ENV, "1")
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        **uvicorn_options(limit_concurrency=LIMIT, timeout_keep_alive=5, trusted_proxies=[]),
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
