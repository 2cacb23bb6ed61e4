"""Load generators over real HTTP: closed-loop saturation and open-loop offered load.

The open-loop generator schedules every arrival before it starts (a fixed rate) and measures
each request's latency from its *scheduled* time, not from when a client got round to sending
it: a server that falls behind shows its queue in the figures instead of slowing the clients
down (the coordinated-omission trap of closed-loop tools).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] | None = None
    expect: int = 200


def _connection_factory(base_url: str) -> Callable[[], http.client.HTTPConnection]:
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return lambda: http.client.HTTPConnection(host, port, timeout=30)


def _send(connection: http.client.HTTPConnection, request: Request) -> None:
    connection.request(
        request.method, request.path, body=request.body, headers=request.headers or {}
    )
    response = connection.getresponse()
    body = response.read()
    if response.status != request.expect:
        raise RuntimeError(f"{request.method} {request.path}: {response.status} {body[:200]!r}")


def saturation(
    base_url: str, request: Request | Sequence[Request], *, clients: int, total: int
) -> float:
    """Requests per second with `clients` keep-alive clients sending back to back (given
    several requests, client i sends the i-th, round robin)."""
    connect = _connection_factory(base_url)
    per_client = max(1, total // clients)
    requests = [request] if isinstance(request, Request) else list(request)

    def work(client: int) -> None:
        connection = connect()
        mine = requests[client % len(requests)]
        try:
            for _ in range(per_client):
                _send(connection, mine)
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    return per_client * clients / (time.perf_counter() - started)


def open_loop(
    base_url: str, request: Request, *, rate: float, seconds: float, clients: int = 64
) -> list[float]:
    """Latencies in ms of requests offered at `rate` per second for `seconds`, each measured
    from its scheduled arrival. `clients` connections take the arrivals in order; when all
    are busy an arrival waits, and that wait counts."""
    count = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.05
    schedule = [start + i / rate for i in range(count)]
    latencies = [0.0] * count
    next_index = 0
    lock = threading.Lock()
    connect = _connection_factory(base_url)

    def client() -> None:
        nonlocal next_index
        connection = connect()
        try:
            while True:
                with lock:
                    index = next_index
                    next_index += 1
                if index >= count:
                    return
                delay = schedule[index] - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                _send(connection, request)
                latencies[index] = (time.perf_counter() - schedule[index]) * 1000
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(min(clients, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies
