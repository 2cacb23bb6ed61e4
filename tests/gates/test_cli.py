"""`ica gate|lock|override ...` against a real ICA over real HTTP, as a pipeline step calls it:
exit 0 allow, 1 deny, 2 pending, 3 and above errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest

from azdev_ica.cli.main import main
from tests.gates.conftest import new_run
from tests.support.liveserver import LiveServer

SERVER_MODULES = ("sqlalchemy", "fastapi", "starlette", "pydantic", "uvicorn", "yaml", "alembic")


@pytest.fixture
def server(app: Any) -> Any:
    live = LiveServer(app).start()
    yield live
    live.stop()


@pytest.fixture
def ica(monkeypatch: pytest.MonkeyPatch, server: Any, make_key: Any, capsys: Any) -> Any:
    for name in ("TF_BUILD", "BUILD_BUILDID", "GITHUB_ACTIONS", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICA_URL", server.url)

    def run(*argv: str, token: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setenv("ICA_TOKEN", token or make_key("azdev_devops"))
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def test_gate_exit_codes_say_allow_deny_and_pending(ctx, ica):
    first, second = new_run(ctx, stage="staging"), new_run(ctx, stage="staging")
    code, out, _ = ica("gate", "evaluate", "--run-key", first)
    assert (code, "gate: allow" in out) == (0, True)
    code, out, _ = ica("gate", "evaluate", "--run-key", second)
    assert (code, "lock_held" in out) == (2, True)
    code, out, _ = ica("gate", "evaluate", "--run-key", new_run(ctx, coverage=1))
    assert (code, "coverage_below_minimum" in out) == (1, True)


def test_gate_reads_a_dependency_file(ctx, ica, tmp_path):
    from tests.gates.conftest import use_policy

    use_policy(ctx, "gates:\n  dependency_allow_list: [pkg:pypi/fastapi]\n")
    listing = tmp_path / "deps.txt"
    listing.write_text("pkg:pypi/fastapi@0.115.0\npkg:pypi/evil@1\n")
    run_key = new_run(ctx, stage="staging")
    code, out, _ = ica("gate", "evaluate", "--run-key", run_key, "--dependencies", str(listing))
    assert (code, "pkg:pypi/evil" in out) == (1, True)


def test_errors_exit_three_and_above(ica):
    cases = [
        (["gate", "evaluate", "--run-key", "ado:p:1", "--tenant", "xx", "--stage", "test"], 3),
        (["gate", "evaluate"], 64),
        (["lock", "release", "--tenant", "to", "--stage", "test", "--reason", "x"], 4),
    ]
    for argv, code in cases:
        assert ica(*argv)[0] == code, argv


def test_lock_show_and_release(ctx, ica, make_key):
    run_key = new_run(ctx, stage="staging")
    ica("gate", "evaluate", "--run-key", run_key)
    code, out, _ = ica("lock", "show", "--tenant", "to", "--stage", "staging")
    assert (code, f"held by {run_key}" in out) == (0, True)
    admin = make_key("admin")
    code, out, _ = ica("lock", "release", "--tenant", "to", "--stage", "staging",
                       "--reason", "agent died", token=admin)  # fmt: skip
    assert (code, "released" in out) == (0, True)


def test_override_request_sign_and_allow(ctx, ica, make_person):
    ceo = make_person("ceo", [("azdev_override_signer", None)])
    run_key = new_run(ctx)
    code, out, _ = ica("override", "request", "--run-key", run_key, "--reason", "hotfix")
    assert (code, "pending (0/1 signatures)" in out) == (0, True)
    override_id = out.split()[1]
    code, out, _ = ica("override", "sign", override_id, "--decision", "approve", token=ceo.token)
    assert (code, ": signed" in out) == (0, True)
    assert ica("gate", "evaluate", "--run-key", run_key)[0] == 0
    code, _, err = ica("override", "sign", override_id, "--decision", "approve", token=ceo.token)
    assert (code, "already_signed" in err) == (4, True)
    code, out, _ = ica("override", "stats")
    assert (code, "1 override(s)" in out) == (0, True)


def test_the_gate_client_imports_nothing_of_the_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "azdev_ica.cli.main", "gate", "evaluate",
         "--run-key", "ado:p:1", "--timeout", "0.2"],
        env={"ICA_URL": f"http://127.0.0.1:{port}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert not imported & set(SERVER_MODULES)
