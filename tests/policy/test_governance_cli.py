"""`ica policy propose|sign|proposals|proposal|withdraw` over real HTTP, `ica policy diff`, and
`ica policy apply` after the first policy: only with --break-glass and a reason (audited)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.cli.main import main
from azdev_ica.db.tables import AuditInbox, PolicyVersion
from azdev_ica.policy import parse_policy
from tests.support.liveserver import LiveServer


@pytest.fixture
def server(app: Any) -> Any:
    live = LiveServer(app).start()
    yield live
    live.stop()


@pytest.fixture
def files(ctx: Any, tmp_path: Path) -> dict[str, Path]:
    with ctx.read() as session:
        active = session.scalars(
            select(PolicyVersion.document).order_by(PolicyVersion.id.desc()).limit(1)
        ).one()
    paths = {
        "active": tmp_path / "active.yaml",
        "renamed": tmp_path / "renamed.yaml",
        "bad": tmp_path / "bad.yaml",
    }
    paths["active"].write_text(active)
    paths["renamed"].write_text(active.replace("name: Cook Islands", "name: Kūki ʻĀirani"))
    paths["bad"].write_text(active.replace("tenants:", "tenantz:"))
    return paths


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, settings: Any, server: Any) -> Any:
    """The CLI's environment: the test's database and secret, and the live server's URL."""
    monkeypatch.setenv("ICA_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ICA_DATABASE_URL", settings.resolved_database_url())
    monkeypatch.setenv("ICA_SECRET_KEY", settings.secret_key.get_secret_value())
    monkeypatch.setenv("ICA_URL", server.url)

    def as_token(token: str) -> None:
        monkeypatch.setenv("ICA_TOKEN", token)

    return as_token


def ica(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_propose_sign_twice_and_the_new_policy_is_active(env, capsys, make_person, files, ctx):
    dana = make_person("dana", [("azdev_devops", None)])
    alice = make_person("alice", [("azdev_approver_tech", None)])
    bob = make_person("bob", [("azdev_approver_biz", None)])
    env(dana.token)
    code, out, err = ica(
        capsys, "policy", "propose", str(files["renamed"]), "--reason", "rename ck"
    )
    assert code == 0, err
    sha = parse_policy(files["renamed"].read_text()).sha256
    assert out.strip() == f"proposal 1 pending: policy {sha[:12]}, 0/2 approvals"
    assert ica(capsys, "policy", "sign", "1")[0] == 4  # the proposer's side never signs
    env(alice.token)
    code, out, _ = ica(capsys, "policy", "sign", "1", "--comment", "looks right")
    assert (code, out.strip()) == (0, f"proposal 1 pending: policy {sha[:12]}, 1/2 approvals")
    code, _, err = ica(capsys, "policy", "sign", "1")
    assert code == 4
    assert "[already_signed]" in err
    env(bob.token)
    code, out, _ = ica(capsys, "policy", "sign", "1")
    assert code == 0
    assert "proposal 1 active" in out
    assert "2/2 approvals, active as version 2" in out
    code, out, _ = ica(capsys, "policy", "proposal", "1")
    assert code == 0
    assert "approve  person" in out
    assert "(looks right)" in out
    code, out, _ = ica(capsys, "policy", "proposals", "--output", "json")
    assert [item["status"] for item in json.loads(out)["items"]] == ["active"]
    with ctx.read() as session:
        assert ctx.policies.active(session).sha256 == sha


def test_bad_input_and_withdraw(env, capsys, make_person, files):
    dana = make_person("dana", [("azdev_devops", None)])
    env(dana.token)
    code, _, err = ica(capsys, "policy", "propose", str(files["bad"]), "--reason", "x")
    assert code == 3
    assert "tenantz" in err or "tenants" in err
    code, _, err = ica(
        capsys, "policy", "propose", str(files["active"]) + ".missing", "--reason", "x"
    )
    assert code == 64
    assert ica(capsys, "policy", "propose", str(files["renamed"]))[0] == 64  # --reason needed
    assert ica(capsys, "policy", "propose", str(files["renamed"]), "--reason", "x")[0] == 0
    code, out, _ = ica(capsys, "policy", "withdraw", "1", "--reason", "later")
    assert code == 0
    assert "proposal 1 withdrawn" in out
    assert ica(capsys, "policy", "sign", "x")[0] == 64
    assert ica(capsys, "policy", "proposal", "9")[0] == 3  # unknown: a 404


def test_apply_after_the_first_policy_needs_break_glass(env, capsys, files, ctx):
    code, _, err = ica(capsys, "policy", "apply", str(files["renamed"]))
    assert code == 3
    assert "changes are governed" in err
    assert "--break-glass" in err
    code, _, err = ica(capsys, "policy", "apply", str(files["renamed"]), "--break-glass")
    assert code == 64
    assert "--reason" in err
    # The active policy again is harmless without the flag.
    assert ica(capsys, "policy", "apply", str(files["active"]))[0] == 0
    code, out, _ = ica(
        capsys,
        "policy",
        "apply",
        str(files["renamed"]),
        "--break-glass",
        "--reason",
        "both approvers unreachable, INC-7",
    )
    assert code == 0, out
    assert "applied by break-glass (version 2)" in out
    with ctx.read() as session:
        entry = session.scalars(
            select(AuditInbox)
            .where(AuditInbox.action == "policy.apply")
            .order_by(AuditInbox.id.desc())
        ).first()
        assert entry is not None
    body = json.loads(entry.body) if isinstance(entry.body, (str, bytes)) else entry.body
    assert body["data"]["break_glass"] is True
    assert body["data"]["reason"] == "both approvers unreachable, INC-7"


def test_diff(env, capsys, files):
    code, out, _ = ica(capsys, "policy", "diff", str(files["active"]))
    assert code == 0
    assert out.startswith("no change")
    code, out, _ = ica(capsys, "policy", "diff", str(files["renamed"]))
    assert code == 1
    lines = out.splitlines()
    assert lines[1:3] == ["  tenants changed: ck", "  sections changed: tenants"]
    assert '-      "name": "Cook Islands",' in lines
    assert '+      "name": "Kūki ʻĀirani",' in lines
    # No earlier version yet.
    code, _, err = ica(capsys, "policy", "diff")
    assert code == 3
    assert "--from" in err
    ica(capsys, "policy", "apply", str(files["renamed"]), "--break-glass", "--reason", "r")
    code, out, _ = ica(capsys, "policy", "diff", "--output", "json")
    assert code == 1
    answer = json.loads(out)
    assert answer["from"]["label"].startswith("version 1")
    assert answer["to"]["label"].startswith("version 2")
    assert answer["summary"]["tenants_changed"] == ["ck"]
    code, out, _ = ica(capsys, "policy", "diff", "--from", "2", "--to", "1")
    assert code == 1
    assert '+      "name": "Cook Islands",' in out.splitlines()
    for argv in (["--from", "zzz"], ["--to", "9"], ["--from", "1", str(files["bad"])]):
        assert ica(capsys, "policy", "diff", *argv)[0] == 3, argv
