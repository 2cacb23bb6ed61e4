"""`ica run ...` against a real ICA over real HTTP, as a pipeline step would call it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

import pytest

from azdev_ica.cli.main import main
from tests.support.liveserver import LiveServer

PROJECT = "6f2d1c9e-0000-4000-8000-00000000aaaa"
AZURE = {
    "TF_BUILD": "True",
    "BUILD_BUILDID": "812",
    "SYSTEM_TEAMPROJECTID": PROJECT,
    "SYSTEM_TEAMPROJECT": "FarmerRegistry",
    "BUILD_DEFINITIONNAME": "registry-ci",
    "BUILD_SOURCEBRANCH": "refs/heads/main",
    "BUILD_SOURCEVERSION": "0123456789abcdef0123456789abcdef01234567",
    "BUILD_REQUESTEDFORID": "a1b2c3d4-0000-4000-8000-000000000001",
    "BUILD_REQUESTEDFOREMAIL": "dev@example.org",
    "SYSTEM_JOBATTEMPT": "1",
}
GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_RUN_ID": "9001",
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_REPOSITORY_ID": "123456",
    "GITHUB_REPOSITORY": "pacific/registry",
    "GITHUB_SHA": "fedcba9876543210fedcba9876543210fedcba98",
    "GITHUB_REF": "refs/heads/main",
    "GITHUB_WORKFLOW": "deploy",
    "GITHUB_ACTOR_ID": "424242",
}
PIPELINE_VARS = {*AZURE, *GITHUB, "AGENT_JOBSTATUS", "ICA_URL", "ICA_TOKEN"}


@pytest.fixture
def server(app: Any) -> Any:
    live = LiveServer(app).start()
    yield live
    live.stop()


@pytest.fixture
def pipeline_env(monkeypatch: pytest.MonkeyPatch, server: Any, make_key: Any) -> Any:
    """A clean environment with ICA_URL and ICA_TOKEN; returns a setter for pipeline vars."""
    for name in PIPELINE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICA_URL", server.url)
    monkeypatch.setenv("ICA_TOKEN", make_key("azdev_devops"))

    def set_vars(values: dict[str, str]) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_vars


def ica(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_azure_pipeline_reports_a_run_with_no_flags(pipeline_env, capsys, client, make_key):
    pipeline_env(AZURE)
    key = f"ado:{PROJECT}:812"

    code, out, _ = ica(capsys, "run", "start", "--tenant", "ws", "--stage", "production")
    assert (code, out.strip()) == (0, f"run {key} started (attempt 1, running)")

    code, out, _ = ica(capsys, "run", "event", "test", "--set", "passed=true", "--set", "total=42")
    assert code == 0
    assert f"recorded on {key}" in out

    pipeline_env({"AGENT_JOBSTATUS": "SucceededWithIssues"})
    code, out, _ = ica(capsys, "run", "finish")
    assert (code, out.strip()) == (
        0,
        f"run {key} finished: success (flagged: succeeded with issues)",
    )

    run = client.get(
        f"/api/v1/azdev/run/{key}", headers={"Authorization": f"Bearer {make_key('azdev_auditor')}"}
    ).json()
    assert run["pipeline_name"] == "registry-ci"
    assert run["project"] == "FarmerRegistry"
    assert run["branch"] == "refs/heads/main"
    assert run["commit"] == AZURE["BUILD_SOURCEVERSION"]
    assert run["requested_for"] == AZURE["BUILD_REQUESTEDFORID"]
    assert (run["tenant"], run["stage"], run["status"], run["flagged"]) == (
        "ws",
        "production",
        "success",
        True,
    )
    assert [(e["phase"], e["data"]) for e in run["events"]] == [
        ("test", {"passed": True, "total": 42})
    ]

    code, out, _ = ica(capsys, "run", "show")
    assert code == 0
    assert out.splitlines()[0] == f"run {key}: success (attempt 1)"


def test_a_github_workflow_passes_its_job_status(pipeline_env, capsys):
    pipeline_env(GITHUB)
    assert ica(capsys, "run", "start")[0] == 0
    code, out, _ = ica(capsys, "run", "finish", "--status", "failure", "--output", "json")
    assert code == 0
    answer = json.loads(out)
    assert (answer["run_key"], answer["status"]) == ("gh:123456:9001", "failed")


def test_a_repeated_start_is_answered_not_duplicated(pipeline_env, capsys):
    pipeline_env(AZURE)
    assert ica(capsys, "run", "start")[0] == 0
    code, out, _ = ica(capsys, "run", "start")
    assert code == 0
    assert out.strip().endswith("(already recorded)")


def test_a_re_run_reopens_the_run_with_its_attempt(pipeline_env, capsys):
    pipeline_env(GITHUB)
    ica(capsys, "run", "start")
    ica(capsys, "run", "finish", "--status", "failure")
    pipeline_env({"GITHUB_RUN_ATTEMPT": "2"})
    code, out, _ = ica(capsys, "run", "event", "build", "--output", "json")
    assert code == 0
    assert json.loads(out)["run"]["status"] == "running"
    code, out, _ = ica(capsys, "run", "finish", "--status", "success", "--output", "json")
    assert (code, json.loads(out)["attempt"], json.loads(out)["status"]) == (0, 2, "success")


def test_an_invalid_payload_exits_3_with_the_problem(pipeline_env, capsys):
    pipeline_env(AZURE)
    ica(capsys, "run", "start")
    code, out, err = ica(
        capsys, "run", "event", "test", "--set", "passed=maybe", "--output", "json"
    )
    assert code == 3
    assert json.loads(out)["status"] == 422
    assert err.startswith("ica: 422 ")


def test_a_conflicting_finish_exits_3(pipeline_env, capsys):
    pipeline_env(GITHUB)
    ica(capsys, "run", "start")
    assert ica(capsys, "run", "finish", "--status", "success")[0] == 0
    code, _, err = ica(capsys, "run", "finish", "--status", "failure")
    assert code == 3
    assert "409" in err


def test_a_wrong_token_exits_4(pipeline_env, capsys, monkeypatch):
    pipeline_env(AZURE)
    monkeypatch.setenv("ICA_TOKEN", "ica_aaaaaaaaaa_" + "b" * 43)
    code, _, err = ica(capsys, "run", "start")
    assert code == 4
    assert "401" in err


def test_a_reader_key_cannot_write_and_exits_4(pipeline_env, capsys, monkeypatch, make_key):
    pipeline_env(AZURE)
    monkeypatch.setenv("ICA_TOKEN", make_key("azdev_auditor"))
    code, _, err = ica(capsys, "run", "start")
    assert (code, "403" in err) == (4, True)


def test_an_unreachable_server_exits_5_after_retrying(pipeline_env, capsys, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pipeline_env(AZURE)
    monkeypatch.setenv("ICA_URL", f"http://127.0.0.1:{port}")
    code, _, err = ica(capsys, "run", "start", "--timeout", "1.5")
    assert code == 5
    assert "unreachable" in err
    assert "attempts" in err


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({}, ["run", "start"], "missing --provider"),
        (GITHUB, ["run", "finish"], "missing --status"),
        ({}, ["run", "event", "build"], "missing --run-key"),
        (AZURE, ["run", "event", "build", "--data", "[1]"], "--data must be a JSON object"),
        (AZURE, ["run", "event", "build", "--set", "novalue"], "--set takes KEY=VALUE"),
        ({**AZURE, "SYSTEM_JOBATTEMPT": "two"}, ["run", "start"], "SYSTEM_JOBATTEMPT"),
    ],
)
def test_usage_errors_exit_64_without_calling_ica(pipeline_env, capsys, env, argv, message):
    pipeline_env(env)
    code, _, err = ica(capsys, *argv)
    assert code == 64
    assert message in err


def test_without_ica_url_it_says_so(pipeline_env, capsys, monkeypatch):
    pipeline_env(AZURE)
    monkeypatch.delenv("ICA_URL")
    code, _, err = ica(capsys, "run", "start")
    assert (code, "ICA_URL" in err) == (64, True)


def test_argument_errors_exit_64(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "event", "no-such-phase"])
    assert exited.value.code == 64


SERVER_MODULES = ("sqlalchemy", "fastapi", "starlette", "pydantic", "uvicorn", "yaml", "alembic")


def test_the_client_imports_nothing_of_the_server():
    """`python -X importtime` of a whole `ica run` call lists no server-side module."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "azdev_ica.cli.main", "run", "show",
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
    assert "azdev_ica" in imported
    assert not imported & set(SERVER_MODULES)
