"""`ica approval ...` against a real ICA over real HTTP, as a pipeline step and a person would
call it; the exit codes are the contract a pipeline script branches on."""

from __future__ import annotations

from typing import Any

import pytest

from azdev_ica.cli.main import main
from tests.approvals.conftest import PROJECT, RUN_KEY
from tests.support.liveserver import LiveServer

AZURE = {
    "TF_BUILD": "True",
    "BUILD_BUILDID": "4711",
    "SYSTEM_TEAMPROJECTID": PROJECT,
}


@pytest.fixture
def server(app: Any) -> Any:
    live = LiveServer(app).start()
    yield live
    live.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, server: Any, make_key: Any) -> Any:
    """ICA_URL and a pipeline's ICA_TOKEN; returns a setter for other variables."""
    for name in ("TF_BUILD", "BUILD_BUILDID", "SYSTEM_TEAMPROJECTID", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICA_URL", server.url)
    monkeypatch.setenv("ICA_TOKEN", make_key("azdev_devops", ["to"]))

    def set_vars(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_vars


def ica(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_person(env: Any, person: Any) -> None:
    env(ICA_TOKEN=person.token)


def test_a_pipeline_asks_people_sign_and_wait_says_approved(env, capsys, run_key, people):
    env(**AZURE)
    code, out, _ = ica(capsys, "approval", "request")
    assert code == 0
    assert out.strip() == (
        "approval 1 pending for to/production, awaiting technical and business: "
        "https://ica.localhost/approvals/1"
    )
    code, out, _ = ica(capsys, "approval", "wait", "1", "--timeout", "0.2", "--interval", "0.05")
    assert code == 2
    assert "still waiting at the timeout" in out

    as_person(env, people["alice"])
    code, out, _ = ica(capsys, "approval", "sign", "1", "--decision", "approve", "--comment", "ok")
    assert (code, out.split(":")[0]) == (
        0,
        "approval 1 technical_approved for to/production, awaiting business",
    )
    as_person(env, people["bob"])
    assert ica(capsys, "approval", "sign", "1", "--decision", "approve")[0] == 0

    code, out, _ = ica(capsys, "approval", "status", "1")
    assert code == 0
    assert "technical  approve  alice  (ok)" in out
    assert "business  approve  bob" in out
    # Without an id, `wait` asks for this run's approval and reads the decision.
    env(ICA_TOKEN=people["rita"].token)
    code, out, _ = ica(capsys, "approval", "wait", "--timeout", "5")
    assert (code, out.split(" ")[2]) == (0, "approved")


def test_the_requester_cannot_sign_and_exits_4_naming_the_rule(env, capsys, run_key, people):
    assert ica(capsys, "approval", "request", "--run-key", RUN_KEY)[0] == 0
    as_person(env, people["rita"])
    code, _, err = ica(capsys, "approval", "sign", "1", "--decision", "approve")
    assert code == 4
    assert "[requester_cannot_sign]" in err


def test_a_withdrawn_request_makes_wait_exit_1(env, capsys, run_key):
    assert ica(capsys, "approval", "request", "--run-key", RUN_KEY)[0] == 0
    code, out, _ = ica(capsys, "approval", "withdraw", "1", "--reason", "superseded")
    assert (code, out.split(" ")[2]) == (0, "withdrawn")
    assert ica(capsys, "approval", "wait", "1", "--timeout", "5")[0] == 1


def test_a_rejection_makes_wait_exit_1(env, capsys, run_key, people):
    assert ica(capsys, "approval", "request", "--run-key", RUN_KEY)[0] == 0
    as_person(env, people["bob"])
    assert ica(capsys, "approval", "sign", "1", "--decision", "reject")[0] == 0
    assert ica(capsys, "approval", "wait", "1", "--output", "json")[0] == 1


def test_errors_exit_3_and_above(env, capsys, run_key, monkeypatch):
    code, _, err = ica(capsys, "approval", "status", "999")
    assert code == 3
    assert "404" in err
    code, _, err = ica(capsys, "approval", "request", "--run-key", RUN_KEY, "--cost-minor", "5")
    assert code == 3  # money needs a currency: a 422
    monkeypatch.setenv("ICA_TOKEN", "ica_wrongwrong_" + "A" * 43)
    assert ica(capsys, "approval", "status", "1")[0] == 4
    code, _, err = ica(
        capsys, "approval", "wait", "1", "--url", "http://127.0.0.1:9", "--timeout", "0.3"
    )
    assert code == 5
    monkeypatch.delenv("TF_BUILD", raising=False)
    code, _, err = ica(capsys, "approval", "request")
    assert code == 64
    assert "--run-key" in err
