"""The pipeline commands import only what they use: against a plain http:// address, `ica run
event` (and start, finish, `ica gate evaluate`, `ica approval status`) loads no TLS, no
`http.client`/`email`, no `socket` enum tables, no `typing`, no `shutil` (argparse's terminal
width), no `urllib.parse`, nothing of the server's commands and no other subcommand's module.
`ica run event`, the most frequent call, goes further: no argparse and no `json` either (so
no `re`, `enum`, `functools`, `collections`, `gettext`, `locale`), only `_json`, `_socket`
and its own modules beyond the interpreter's start.

Checked on the modules a real process imports, read from `python -X importtime` (no timing is
looked at: the machine is shared), for the installed console script's way in and for the
zipapp ICA serves, against an allowed list: anything new on the path fails here first.
bench/cli_startup.py measures the time against curl.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from azdev_ica import client_zipapp

# Each is milliseconds on an agent, or the server: named so a failure says what came back.
HEAVY = (
    "ssl",
    "socket",
    "selectors",
    "http.client",
    "email",
    "urllib.parse",
    "urllib.request",
    "ipaddress",
    "encodings.idna",
    "typing",
    "shutil",
    "textwrap",
    "dataclasses",
    "uuid",
    "subprocess",
    "sqlalchemy",
    "pydantic",
    "fastapi",
    "azdev_ica.cli.admin",
    "azdev_ica.cli.ledger",
    "azdev_ica.cli.users",
    "azdev_ica.cli.formats",
)

# What the pipeline commands may import beyond what `import json, sys` already loads: argparse
# (and its gettext/locale), the raw socket module, and the client's own modules.
ALLOWED = frozenset(
    {
        "__future__",
        "argparse",
        "gettext",
        "locale",
        "_locale",
        "warnings",
        "errno",
        "collections.abc",
        "_socket",
        "azdev_ica",
        "azdev_ica.cli",
        "azdev_ica.cli.main",
        "azdev_ica.cli.parsing",
        "azdev_ica.cli.pipeline",
        "azdev_ica.cli.http",
        "azdev_ica.cli.fastjson",
        "azdev_ica.cli.wire",
        "azdev_ica.cli.identity",
        "azdev_ica.cli.listing",
        "azdev_ica.cli.approvals",
        "azdev_ica.cli.gate_client",
    }
)
# How the zipapp is started (`python ica.pyz` runs its __main__ through runpy, from the zip).
ZIPAPP_START = frozenset(
    {
        "runpy",
        "importlib",
        "importlib.machinery",
        "importlib.util",
        "importlib._abc",
        "contextlib",
        "zlib",
        "__main__",
    }
)

# Not for `ica run ...`: the other pipeline commands, and `run list`'s module.
NOT_RUN = {"azdev_ica.cli.approvals", "azdev_ica.cli.gate_client", "azdev_ica.cli.listing"}
EVENT = ["run", "event", "test", "--run-key", "ado:p:1", "--set", "passed=true"]
COMMANDS = {
    "run event": (EVENT, NOT_RUN),
    "run start": (
        ["run", "start", "--provider", "ado", "--project-id", "p", "--run-id", "1",
         "--pipeline-name", "app", "--commit", "a" * 40, "--commit-time",
         "2026-01-01T00:00:00+00:00"],
        NOT_RUN,
    ),
    "run finish": (
        ["run", "finish", "--run-key", "ado:p:1", "--status", "success"],
        NOT_RUN,
    ),
    "gate evaluate": (
        ["gate", "evaluate", "--run-key", "ado:p:1", "--tenant", "ws", "--stage", "prod"],
        {"azdev_ica.cli.approvals", "azdev_ica.cli.listing"},
    ),
    "approval status": (
        ["approval", "status", "7", "--output", "json"],
        {"azdev_ica.cli.gate_client"},
    ),
}  # fmt: skip

ANSWERS = {
    "/api/v1/azdev/run/event": {
        "event": {"event_id": "e1", "phase": "test", "attempt": 1},
        "run": {"run_key": "ado:p:1"},
    },
    "/api/v1/azdev/run/start": {"run_key": "ado:p:1", "attempt": 1, "status": "running"},
    "/api/v1/azdev/run/finish": {"run_key": "ado:p:1", "status": "success"},
    "/api/v1/azdev/gate/evaluate": {
        "status": "allow",
        "run_key": "ado:p:1",
        "tenant": "ws",
        "stage": "prod",
        "reasons": [],
    },
}

APPROVAL = {
    "id": 7,
    "status": "approved",
    "tenant": "ws",
    "stage": "prod",
    "link": "http://ica/approvals/7",
    "run_key": "ado:p:1",
    "expires_at": "2026-01-02T00:00:00Z",
    "sla_due_at": "2026-01-01T04:00:00Z",
    "signatures": [],
}


@pytest.fixture(scope="module")
def ica_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(ANSWERS[self.path])

        def do_GET(self) -> None:
            self._answer(APPROVAL)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def imported(argv: list[str], url: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -X importtime ARGV`; the names of the modules it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        env={"ICA_URL": url, "ICA_TOKEN": "k", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    names.discard("imported package")
    return done, names


@pytest.fixture(scope="module")
def baseline(ica_url: str) -> set[str]:
    """What the interpreter itself and `import json, sys` load."""
    _, names = imported(["-c", "import json, sys"], ica_url)
    assert {"json", "re", "encodings"} <= names
    return names


CONSOLE_SCRIPT = "import sys; from azdev_ica.cli.main import main; sys.exit(main())"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_pipeline_command_imports_only_what_it_uses(name, ica_url, baseline):
    argv, others = COMMANDS[name]
    done, names = imported(["-c", CONSOLE_SCRIPT, *argv], ica_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(names & set(HEAVY)) == []
    assert sorted(names & others) == []  # the other pipeline commands' modules
    assert sorted(names - baseline - ALLOWED) == []


def test_the_zipapp_imports_no_more(tmp_path, ica_url, baseline):
    pyz = tmp_path / "ica.pyz"
    pyz.write_bytes(client_zipapp.build())
    done, names = imported([str(pyz), *EVENT], ica_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recorded on ado:p:1" in done.stdout
    assert sorted(names & set(HEAVY)) == []
    assert sorted(names - baseline - ALLOWED - ZIPAPP_START) == []


# `ica run event`'s own modules, and the two C modules it uses, beyond `import os, sys`.
EVENT_ALLOWED = frozenset(
    {
        "__future__",
        "_json",
        "_socket",
        "azdev_ica",
        "azdev_ica.cli",
        "azdev_ica.cli.main",
        "azdev_ica.cli.pipeline",
        "azdev_ica.cli.http",
        "azdev_ica.cli.fastjson",
        "azdev_ica.cli.wire",
        "azdev_ica.cli.identity",
    }
)
EVENT_HEAVY = ("argparse", "json", "re", "enum", "functools", "collections", "gettext")
EVENT_HEAVY += ("locale", "warnings", "azdev_ica.cli.parsing")


@pytest.mark.parametrize("way", ["console script", "kit", "archive"])
def test_run_event_imports_no_argparse_and_no_json(way, tmp_path, ica_url):
    """As pip's console script runs it, as the kit runs the zipapp (extracted, compiled,
    `python3 -S app/__main__.py`), and as the bare archive."""
    pyz = tmp_path / "ica.pyz"
    pyz.write_bytes(client_zipapp.build())
    flags = ["-S"] if way == "kit" else []
    if way == "kit":
        with zipfile.ZipFile(pyz) as archive:
            archive.extractall(tmp_path / "app")
        compiled = subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(tmp_path / "app")], check=False
        )
        assert compiled.returncode == 0
    argv = {
        "console script": ["-c", CONSOLE_SCRIPT],
        "kit": [str(tmp_path / "app" / "__main__.py")],
        "archive": [str(pyz)],
    }[way]
    # The floor: the interpreter's start with `os`, and for the archive what runs a zipapp.
    floor_code = "import os, sys" + (", runpy, zlib" if way == "archive" else "")
    _, floor = imported([*flags, "-c", floor_code], ica_url)
    done, names = imported([*flags, *argv, *EVENT], ica_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recorded on ado:p:1" in done.stdout
    assert sorted((names & set(HEAVY + EVENT_HEAVY)) - floor) == []
    assert sorted(names - floor - EVENT_ALLOWED) == []
    if way == "kit":  # nothing of it is in python -S's own start
        assert sorted(names & set(EVENT_HEAVY)) == []


def test_an_admin_command_still_sees_the_whole_tree() -> None:
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


@pytest.mark.parametrize("action", ["start", "event", "finish", "show", "list", "evnt"])
def test_a_run_action_built_alone_has_the_whole_trees_help(action, capsys, monkeypatch):
    """`ica run event` builds its own parser only; what it says is what the whole tree says."""
    from azdev_ica.cli.main import build_parser, main

    monkeypatch.setenv("COLUMNS", "100")
    said = []
    for run in (lambda argv: main(argv), lambda argv: build_parser().parse_args(argv)):
        with pytest.raises(SystemExit) as done:
            run(["run", action, "--help"])
        said.append((done.value.code, capsys.readouterr()))
    assert said[0] == said[1]
    assert said[0][0] == (0 if action != "evnt" else 64)


@pytest.mark.parametrize("columns", ["60", "200", None, "wide", "-3"])
def test_the_help_is_as_wide_as_argparse_would_make_it(columns, monkeypatch) -> None:
    """The width argparse takes from shutil (COLUMNS, else the terminal, else 80), worked
    out without importing shutil."""
    import shutil

    from azdev_ica.cli.parsing import terminal_columns

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns
