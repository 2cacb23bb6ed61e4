"""`ica serve --workers 2` on PostgreSQL, scraped over real HTTP: the counts of both worker
processes add up in one scrape, the multiprocess directory is emptied at start, and a worker
that dies is marked dead (its live gauge drops, its counts stay)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
ICA = [sys.executable, "-m", "azdev_ica.cli.main"]
PID_FILE = re.compile(r"_(\d+)\.db$")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pids(directory: Path, kind: str) -> set[int]:
    return {
        int(match.group(1))
        for item in directory.glob(f"{kind}*.db")
        if (match := PID_FILE.search(item.name))
    }


def _wait(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def served(pg_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    metrics_dir = tmp_path / "multiproc"
    metrics_dir.mkdir()
    # A file left by an earlier run: unreadable as metrics, so a scrape fails unless
    # `ica serve` empties the directory first.
    (metrics_dir / "counter_4242.db").write_bytes(b"left over from an earlier run")
    env = {
        **os.environ,
        "ICA_DATA_DIR": str(tmp_path / "var"),
        "ICA_DATABASE_URL": pg_url,
        "ICA_SECRET_KEY": "s" * 48,
        "ICA_LEDGER_SEALER": "false",
        "ICA_JOBS_SCHEDULER": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    run = {"env": env, "capture_output": True, "text": True, "timeout": 120, "check": True}
    subprocess.run([*ICA, "init", "--policy", str(ROOT / "examples/policy.yaml")], **run)
    created = subprocess.run(
        [*ICA, "apikey", "create", "--name", "prom", "--role", "azdev_monitoring", "--output=json"],
        **run,
    )
    key = json.loads(created.stdout)["key"]
    port = _free_port()
    server = subprocess.Popen(
        [*ICA, "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: len(_pids(metrics_dir, "gauge_livesum")) == 2, "two workers")
        # A worker listens once its start-up (the lifespan) is done, after its gauge exists;
        # the probes that were answered count in the metrics like the test's own requests.
        answered = 0

        def listening() -> bool:
            nonlocal answered
            try:
                ok = _health(url) == 200
            except httpx.TransportError:
                return False
            answered += ok
            return ok

        _wait(listening, "a worker to listen")
        yield {"url": url, "key": key, "dir": metrics_dir, "server": server, "probes": answered}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def _scrape(url: str, key: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _health(url: str) -> int:
    # A new connection per request, so the kernel hands them to either worker.
    with httpx.Client(timeout=60) as client:
        return client.get(f"{url}/health").status_code


HEALTH = ("ica_http_requests_total", frozenset({("route", "/health"), ("method", "GET")}))


def _health_count(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    name, labels = HEALTH
    return samples.get((name, labels | {("status", "200")}), 0.0)


def test_a_scrape_adds_up_both_workers(served):
    url, key, directory = served["url"], served["key"], served["dir"]
    assert not (directory / "counter_4242.db").exists()
    workers = _pids(directory, "gauge_livesum")
    sent = served["probes"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Until both workers have answered a request (each writes its own counter file).
        while _pids(directory, "counter") != workers:
            assert sent < 4000, "the requests never reached the second worker"
            statuses = list(pool.map(lambda _: _health(url), range(40)))
            assert statuses == [200] * 40
            sent += 40
    samples = _scrape(url, key)
    assert _health_count(samples) == sent
    assert samples[("ica_workers", frozenset())] == 2
    assert samples[("ica_database_up", frozenset())] == 1
    for name in ("ica_ledger_unsealed_entries", "ica_ledger_stalled"):
        assert (name, frozenset()) in samples  # read once, not summed per worker
    assert samples[("ica_ledger_stalled", frozenset())] in (0, 1)

    # A worker dies: uvicorn starts another; the dead one's live gauge is dropped, its
    # counts stay in the totals.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    _wait(
        lambda: (
            len(_pids(directory, "counter") | _pids(directory, "gauge_livesum")) >= 3
            and len(_pids(directory, "gauge_livesum") - {victim}) == 2
        ),
        "a replacement worker",
    )
    after = _scrape(url, key)
    assert after[("ica_workers", frozenset())] == 2
    assert _health_count(after) == sent
    assert victim not in _pids(directory, "gauge_livesum")


def test_each_serve_run_gets_a_fresh_directory_of_its_own(tmp_path, monkeypatch):
    from azdev_ica.observe import multiproc

    # prepare() sets the variable in os.environ; recorded here first so that the monkeypatch
    # removes it again afterwards (a bare delenv of an unset variable restores nothing, and
    # the variable left behind switched the next tests' metrics to multiprocess mode).
    monkeypatch.setenv(multiproc.ENV, str(tmp_path / "unused"))
    monkeypatch.delenv(multiproc.ENV)
    parent = tmp_path / "metrics"
    dead = next(pid for pid in range(4_194_000, 4_000_000, -1) if not multiproc._alive(pid))
    ended = parent / f"serve-{dead}"
    running = parent / f"serve-{os.getppid()}"  # another replica's run, still going
    for directory in (ended, running):
        directory.mkdir(parents=True)
        (directory / "counter_1.db").write_bytes(b"x")
    made = multiproc.prepare(parent)
    assert made == parent / f"serve-{os.getpid()}"
    assert os.environ[multiproc.ENV] == str(made)
    assert made.is_dir()
    assert list(made.iterdir()) == []
    assert not ended.exists()
    assert (running / "counter_1.db").exists()
