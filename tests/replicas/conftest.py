"""Several ICA server processes on one PostgreSQL, as `ica serve` runs them in production.

`Cluster` is one instance: a PostgreSQL database of the test's own, a data directory (the
server secret, the ledger signing key every replica shares), the example policy, a loopback
webhook that records every notification it is sent, and a real `ica witness serve` process
behind a small counting proxy. `Cluster.serve()` starts an `ica serve` process (optionally
with `--workers N`) with short job leases and intervals, so a dead holder's leases run out
in about a second; `Server.kill()` is SIGKILL, not a shutdown: no lease is handed back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _fresh_database, example_policy

SECRET = "r" * 48
API = "/api/v1/azdev"
ICA = (sys.executable, "-m", "azdev_ica.cli.main")
POLICY_EXTRA = "gates:\n  require_tests: false\n  require_scan: false\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `condition` until it answers something true (an event, not a timed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Webhook:
    """A chat incoming webhook on loopback: records the text of every message it accepts."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook._lock:
                    hook.texts.append(json.loads(body)["text"])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/replicas"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self) -> Counter[str]:
        with self._lock:
            return Counter(self.texts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WitnessProxy:
    """Forwards to the witness process and counts the checkpoints submitted to it, by
    (path, checkpoint size, answer status)."""

    def __init__(self, upstream: str) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = urllib.request.Request(
                    upstream + self.path, data=body, method="POST", headers=dict(self.headers)
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, answer = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, answer = exc.code, exc.read()
                with proxy._lock:
                    proxy.calls.append((self.path, _note_size(body), status))
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def added(self) -> list[tuple[int, int]]:
        with self._lock:
            return [
                (size, status)
                for path, size, status in self.calls
                if path.endswith("/add-checkpoint")
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _note_size(body: bytes) -> int:
    """The checkpoint size in an add-checkpoint body (`old N`, proof lines, blank, note: the
    note's second line is the size)."""
    try:
        note = body.decode().split("\n\n", 1)[1]
        return int(note.splitlines()[1])
    except (IndexError, ValueError, UnicodeDecodeError):
        return -1


@dataclass
class Server:
    """One `ica serve` process (with its workers, if any), in a process group of its own."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    workers: int = 1

    def wait_ready(self) -> Server:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"ica serve exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(ready, f"{self.url} to serve")
        return self

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole process group (the server and every worker): no shutdown."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    root: Path
    database_url: str
    ctx: Any
    webhook: Webhook
    witness: WitnessProxy
    env: dict[str, str]
    admin_key: str
    servers: list[Server] = field(default_factory=list)

    def serve(self, count: int = 1, *, workers: int = 1, port: int | None = None) -> list[Server]:
        """Start `count` `ica serve` processes side by side (on `port`: one, e.g. a killed
        server's); answer once all serve."""
        started = []
        for _ in range(count):
            chosen = port or free_port()
            log = self.root / f"serve-{len(self.servers) + len(started)}-{chosen}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [*ICA, "serve", "--port", str(chosen), "--workers", str(workers)],
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append(Server(process, f"http://127.0.0.1:{chosen}", log, workers))
        self.servers.extend(started)
        return [server.wait_ready() for server in started]

    def replicas(self, count: int) -> list[Server]:
        """`count` running single-worker servers: those still alive, and new ones for the rest
        (so that each test stands alone, whatever ran before it in this module)."""
        alive = [server for server in self.servers if server.alive and server.workers == 1]
        if len(alive) < count:
            alive += self.serve(count - len(alive))
        return alive[:count]

    def call(
        self,
        server: Server,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            server.url + API + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {key or self.admin_key}",
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def audit_verify(self) -> None:
        code, out = run_ica(self.env, "audit", "verify")
        assert code == 0, out

    def stop_all(self) -> None:
        """Stop every server (SIGTERM: each hands its leases back)."""
        for server in self.servers:
            server.stop()
        self.servers.clear()


def run_ica(env: dict[str, str], *argv: str) -> tuple[int, str]:
    """`ica ARGV` in this process (an interpreter start costs seconds on a busy machine), with
    `env` as its environment for the duration; the exit code and what it printed."""
    import contextlib
    import io

    from azdev_ica.cli.main import main

    saved = dict(os.environ)
    out = io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = main(list(argv))
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue()


def _env(root: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ICA_") or key == "ICA_TEST_PG_URL"
    }
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "HOME": str(root),
            "ICA_DATA_DIR": str(root / "var"),
            "ICA_DATABASE_URL": database_url,
            "ICA_SECRET_KEY": SECRET,
            "ICA_DB_POOL_SIZE": "4",
            # A dead holder's leases run out within about a second; every pass is quick.
            "ICA_JOBS_INTERVAL_SECONDS": "0.1",
            "ICA_JOBS_LEASE_SECONDS": "1",
            "ICA_LEDGER_LEASE_SECONDS": "1",
            "ICA_LEDGER_SEAL_INTERVAL_SECONDS": "0.05",
            "ICA_LEDGER_CHECKPOINT_INTERVAL_SECONDS": "0.2",
            "ICA_OUTBOX_CLAIM_SECONDS": "2",
            **extra,
        }
    )
    return env


KEY_RE = r"ica_[a-z2-7]{10}_[A-Za-z0-9_-]{43}"


def context(database_url: str, root: Path, clock: Any = None) -> Any:
    """A service context of the test's own on the cluster's database (system clock unless
    `clock`), for setting things up through the services as an operator would."""
    from azdev_ica.clock import SystemClock
    from azdev_ica.db.engine import Database
    from azdev_ica.services.context import LedgerConfig, ServiceContext
    from azdev_ica.settings import Settings

    settings = Settings(
        data_dir=root / "var",
        database_url=database_url,
        secret_key=SECRET,
        ledger_sealer=False,
        jobs_scheduler=False,
    )
    return ServiceContext(
        db=Database.from_url(database_url, pool_size=2),
        clock=clock or SystemClock(),
        pepper=settings.pepper(),
        ledger=LedgerConfig.from_settings(settings),
    )


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A cluster on PostgreSQL (several processes need it)."""
    with make_cluster(request, tmp_path_factory, "postgresql") as made:
        yield made


@contextmanager
def make_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[Cluster]:
    import re

    root = tmp_path_factory.mktemp("replicas")
    with _fresh_database(request, root, backend) as database_url:
        env = _env(root, database_url)
        policy = root / "policy.yaml"
        policy.write_text(example_policy() + "\n" + POLICY_EXTRA)

        def ica(*argv: str) -> str:
            code, out = run_ica(env, *argv)
            assert code == 0, out
            return out

        keys = re.findall(KEY_RE, ica("init", "--policy", str(policy)))
        assert len(keys) == 1
        log_vkey = json.loads(ica("keys", "list", "--output", "json"))[0]["vkey"]
        witness_key = root / "witness" / "w.key"
        witness_vkey = ica(
            "witness", "init", "--key", str(witness_key), "--name", "witness.test/replicas"
        ).strip()
        witness_log = (root / "witness.log").open("w")
        witness = subprocess.Popen(
            [
                *(*ICA, "witness", "serve", "--key", str(witness_key)),
                *("--state", str(root / "witness" / "s.db"), "--port", "0"),
                *("--log", "ica.localhost/audit", log_vkey),
            ],
            stdout=subprocess.PIPE,
            stderr=witness_log,
            text=True,
            env=env,
        )
        assert witness.stdout is not None
        line = witness.stdout.readline()
        assert "listening on " in line, (root / "witness.log").read_text()
        proxy = WitnessProxy(line.split("listening on ")[1].strip())
        webhook = Webhook()
        env["ICA_NOTIFY"] = json.dumps(
            {
                "channels": {"chat": {"type": "webhook", "url": webhook.url}},
                "routes": [{"topics": ["*"], "channels": ["chat"]}],
            }
        )
        env["ICA_WITNESSES"] = json.dumps([{"url": proxy.url, "vkey": witness_vkey}])
        ctx = context(database_url, root)
        made = Cluster(root, database_url, ctx, webhook, proxy, env, keys[0])
        try:
            yield made
        finally:
            made.stop_all()
            ctx.db.dispose()
            witness.terminate()
            witness.wait(timeout=30)
            witness.stdout.close()
            witness_log.close()
            proxy.close()
            webhook.close()
