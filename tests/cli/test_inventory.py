"""`ica inventory` against a real ICA over real HTTP: an aligned table of what runs where,
the same as JSON, filters, and the exit codes of the other client commands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from azdev_ica.cli.main import main
from tests.conftest import bearer
from tests.support.liveserver import LiveServer

API = "/api/v1/azdev"
DIGEST_1 = "sha256:" + "1a" * 32
DIGEST_2 = "sha256:" + "2b" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
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
    reader = make_key("azdev_auditor")

    def run(*argv: str, token: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setenv("ICA_TOKEN", token or reader)
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def deploy(client: Any, ci: dict[str, str], run_id: str, *, tenant: str, stage: str) -> str:
    start = {
        "provider": "ado",
        "project_id": "proj",
        "run_id": run_id,
        "pipeline_name": "farmer-registry-cd",
        "tenant": tenant,
        "stage": stage,
        "commit": COMMIT,
    }
    answer = client.post(f"{API}/run/start", json=start, headers=ci)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["run_key"])


def deployed(client: Any, ci: dict[str, str], run_key: str, **data: Any) -> None:
    event = {"run_key": run_key, "phase": "deploy", "data": {"status": "succeeded", **data}}
    answer = client.post(f"{API}/run/event", json=event, headers=ci)
    assert answer.status_code == 201, answer.text


@pytest.fixture
def fleet(client: Any, make_key: Any, make_person: Any, clock: Any) -> dict[str, str]:
    """Tonga production: 1.5.0, dual-approved by alice and bob; Samoa staging: 1.4.0 with no
    version in its event nor approval (the run's digest); a failed deploy that changes nothing."""
    ci = bearer(make_key("azdev_devops"))
    alice = make_person("alice", [("azdev_approver_tech", "to")])
    bob = make_person("bob", [("azdev_approver_biz", "to")])
    tonga = deploy(client, ci, "11", tenant="to", stage="production")
    approval = client.post(f"{API}/approval", json={"run_key": tonga}, headers=ci)
    assert approval.status_code == 201, approval.text
    for person in (alice, bob):
        signed = client.post(
            f"{API}/approval/{approval.json()['id']}/sign",
            json={"decision": "approve"},
            headers=person.headers,
        )
        assert signed.status_code == 200, signed.text
    clock.advance(timedelta(minutes=30))
    deployed(client, ci, tonga, artifact_digest=DIGEST_1, version="1.5.0")
    clock.advance(timedelta(hours=2))
    samoa = deploy(client, ci, "12", tenant="ws", stage="staging")
    deployed(client, ci, samoa, artifact_digest=DIGEST_2)
    failed = deploy(client, ci, "13", tenant="to", stage="production")
    event = {"run_key": failed, "phase": "deploy", "data": {"status": "failed"}}
    assert client.post(f"{API}/run/event", json=event, headers=ci).status_code == 201
    return {"tonga": tonga, "samoa": samoa}


def test_the_inventory_is_an_aligned_table(ica, fleet):
    code, out, err = ica("inventory")
    assert (code, err) == (0, "")
    tonga, samoa = fleet["tonga"], fleet["samoa"]
    width = len(tonga)
    assert out.splitlines() == [
        "TENANT  STAGE       VERSION  DIGEST               COMMIT   SINCE                 "
        + "RUN".ljust(width)
        + "  APPROVED BY",
        "to      production  1.5.0    sha256:1a1a1a1a1a1a  0123456  2026-11-02T09:30:00Z  "
        + tonga.ljust(width)
        + "  alice (technical), bob (business)",
        "ws      staging     -        sha256:2b2b2b2b2b2b  0123456  2026-11-02T11:30:00Z  "
        + samoa.ljust(width)
        + "  -",
    ]


def test_filters_and_json_are_the_api_listing(ica, fleet, client, make_key):
    code, out, _ = ica("inventory", "--tenant", "ws", "--output", "json")
    assert code == 0
    listing = client.get(f"{API}/inventory?tenant=ws", headers=bearer(make_key("azdev_auditor")))
    assert json.loads(out) == listing.json()
    assert [(i["tenant"], i["stage"], i["run_key"]) for i in json.loads(out)] == [
        ("ws", "staging", fleet["samoa"])
    ]
    code, out, _ = ica("inventory", "--stage", "production")
    assert code == 0
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["to", "production"]]
    # A tenant-scoped reader sees its own tenants only.
    code, out, _ = ica("inventory", token=make_key("azdev_auditor", ["to"]))
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["to"]


def test_an_empty_inventory_says_so(ica):
    code, out, _ = ica("inventory")
    assert (code, out.strip()) == (
        0,
        "no successful deployment recorded (for the targets you may read)",
    )
    code, out, _ = ica("inventory", "--output", "json")
    assert (code, json.loads(out)) == (0, [])


def test_errors_exit_three_and_above(ica, monkeypatch):
    code, _, err = ica("inventory", "--tenant", "NOT A CODE")
    assert code == 3, err
    code, _, err = ica("inventory", token="ica_aaaaaaaaaa_" + "A" * 43)
    assert code == 4, err
    code, _, _ = ica("inventory", "--output", "yaml")
    assert code == 64
    monkeypatch.delenv("ICA_URL")
    code, _, err = ica("inventory")
    assert (code, "ICA_URL" in err) == (64, True)


def test_the_inventory_client_imports_nothing_of_the_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "azdev_ica.cli.main", "inventory",
         "--timeout", "0.2"],
        env={"ICA_URL": f"http://127.0.0.1:{port}", "ICA_TOKEN": "x", "PATH": "/usr/bin:/bin"},
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
