"""The pipeline commands import only what they use: `ica run event` against a plain http://
address loads no TLS, no `http.client`, no `email` and nothing of the server's commands.

Checked on the modules a real process ends up holding (no timing: the machine is shared);
bench/cli_startup.py measures the time against curl.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# What `ica run event` must not load (each is tens of milliseconds on an agent, or the server).
HEAVY = (
    "ssl",
    "http.client",
    "email",
    "urllib.request",
    "dataclasses",
    "uuid",
    "subprocess",
    "sqlalchemy",
    "fastapi",
    "azdev_ica.cli.admin",
    "azdev_ica.cli.ledger",
    "azdev_ica.cli.users",
    "azdev_ica.cli.gate_client",
    "azdev_ica.cli.approvals",
)

PROBE = """
import json, sys
from azdev_ica.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def ica_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps(
                {
                    "event": {"event_id": "e1", "phase": "test", "attempt": 1},
                    "run": {"run_key": "ado:p:1"},
                }
            ).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _modules_after(argv: list[str], url: str) -> tuple[int, set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        env={"ICA_URL": url, "ICA_TOKEN": "k", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    return result["code"], set(result["modules"]), done.stdout


def test_run_event_imports_only_what_it_uses(ica_url: str) -> None:
    code, modules, out = _modules_after(
        ["run", "event", "test", "--run-key", "ado:p:1", "--set", "passed=true"], ica_url
    )
    assert code == 0, out
    assert "recorded on ado:p:1" in out
    loaded = sorted(name for name in HEAVY if name in modules)
    assert loaded == []


def test_an_admin_command_still_sees_the_whole_tree(ica_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "azdev_ica.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    for command in ("run", "approval", "gate", "serve", "audit", "user", "report"):
        assert f"    {command}" in done.stdout
