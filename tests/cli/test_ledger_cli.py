"""`ica keys ...` and `ica audit ...` as an operator types them, on the embedded SQLite file and
on PostgreSQL; and the sealer running inside the served app (`make run`)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from azdev_ica.api.app import create_app
from azdev_ica.db.engine import make_engine
from azdev_ica.settings import Settings
from tests.cli.conftest import KEY_RE, Instance
from tests.conftest import EXAMPLE_POLICY, bearer

VKEY_RE = re.compile(r"ica\.localhost/audit\+[0-9a-f]{8}\+\S+")


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty_db_url: str, capsys: Any) -> Any:
    """An instance after `ica init` (as `make run` does): its admin key, and the instance."""
    data_dir = tmp_path / "var"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICA_DATA_DIR", str(data_dir))
    for name in ("ICA_SECRET_KEY", "ICA_SECRET_KEY_FILE", "ICA_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{data_dir / 'ica.db'}"
    if empty_db_url.startswith("postgresql"):
        monkeypatch.setenv("ICA_DATABASE_URL", empty_db_url)
        url = empty_db_url
    instance = Instance(data_dir=data_dir, database_url=url, capsys=capsys)
    code, out, err = instance.init()
    assert code == 0, err
    keys = KEY_RE.findall(out)
    assert len(keys) == 1
    return instance, keys[0], out


def execute(url: str, *statements: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def run_activity(instance: Instance, key: str) -> None:
    # No background jobs: their own audit entries (e.g. the drill-overdue warnings of a fresh
    # instance) would shift the entry indexes these tests tamper with.
    app = create_app(Settings(ledger_sealer=False, jobs_scheduler=False))
    with TestClient(app) as client:
        for number in range(3):
            body = {
                "provider": "gh",
                "project_id": "1",
                "run_id": str(number),
                "pipeline_name": "ci",
            }
            response = client.post("/api/v1/azdev/run/start", json=body, headers=bearer(key))
            assert response.status_code == 201
    app.state.ctx.db.dispose()


class TestKeys:
    def test_init_creates_and_registers_the_signing_key(self, node):
        instance, _, out = node
        path = instance.data_dir / "ledger.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"created the ledger signing key {path}" in out
        assert "registered the ledger public key" in out
        code, listed, _ = instance.run("keys", "list", "--output", "json")
        assert code == 0
        keys = json.loads(listed)
        assert len(keys) == 1
        assert keys[0]["in_key_file"] is True
        assert keys[0]["valid_until"] is None
        again = instance.init()
        assert again[0] == 0
        assert "ledger signing key" not in again[1]
        assert "registered" not in again[1]

    def test_keys_init_never_overwrites(self, node):
        instance, _, _ = node
        before = (instance.data_dir / "ledger.key").read_text()
        code, _, err = instance.run("keys", "init")
        assert code == 3
        assert "exists: not overwritten" in err
        assert (instance.data_dir / "ledger.key").read_text() == before

    def test_rotation_adds_a_key_and_closes_the_old_ones_period(self, node):
        instance, _, _ = node
        code, out, err = instance.run("keys", "rotate", "--grace-seconds", "0")
        assert code == 0, err
        new = VKEY_RE.search(out)
        assert new is not None
        keys = json.loads(instance.run("keys", "list", "--output", "json")[1])
        assert [k["vkey"] for k in keys][-1] == new.group(0)
        assert keys[0]["valid_until"] == keys[1]["valid_from"]
        assert all(k["in_key_file"] for k in keys)
        assert len((instance.data_dir / "ledger.key").read_text().split("PRIVATE+KEY")) == 3


class TestAudit:
    def test_verify_reports_the_backlog_and_exits_4_when_it_is_stale(self, node, monkeypatch):
        instance, key, _ = node
        run_activity(instance, key)
        code, out, _ = instance.run("audit", "verify")
        assert code == 0, out  # records wait, but for less than a minute
        assert re.search(r"sealing: ok: [1-9]\d* record\(s\) not sealed yet, the oldest", out)
        monkeypatch.setenv("ICA_LEDGER_STALL_AFTER_SECONDS", "0.001")
        code, out, _ = instance.run("audit", "verify")
        assert code == 4, out
        assert "sealing: stalled" in out
        assert "backlog: the oldest unsealed record is" in out
        code, out, _ = instance.run("audit", "verify", "--output", "json")
        assert code == 4
        sealing = json.loads(out)["sealing"]
        assert sealing["state"] == "stalled"
        assert sealing["backlog"]["count"] > 0
        assert instance.run("audit", "seal")[0] == 0
        code, out, _ = instance.run("audit", "verify")
        assert code == 0, out
        assert "sealing: ok: 0 record(s) not sealed yet" in out

    def test_seal_verify_export_replay(self, node, tmp_path):
        instance, key, _ = node
        run_activity(instance, key)
        code, out, err = instance.run("audit", "seal")
        assert code == 0, err
        assert re.search(r"sealed \d+ entries", out)
        assert "signed ica.localhost/audit/" in out
        year = re.search(r"audit/(\d{4}) at size", out)
        assert year is not None
        code, out, _ = instance.run("audit", "verify")
        assert code == 0, out
        assert "RESULT: OK" in out
        bundle = tmp_path / "audit.tar.gz"
        code, out, err = instance.run(
            "audit", "export", "--year", year.group(1), "--out", str(bundle)
        )
        assert code == 0, err
        with tarfile.open(bundle) as tar:
            tar.extractall(tmp_path / "x", filter="data")
        folder = tmp_path / "x" / f"ica-audit-{year.group(1)}"
        vkey = json.loads((folder / "keys.json").read_text())[0]["vkey"]
        checked = subprocess.run(
            [sys.executable, str(folder / "verify.py"), str(folder), "--trust-key", vkey],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stdout
        assert "pinned with --trust-key" in checked.stdout
        code, out, _ = instance.run("audit", "replay")
        assert code == 0, out
        assert "RESULT: OK" in out

    def test_verify_names_the_first_bad_entry_and_fails(self, node):
        instance, key, _ = node
        run_activity(instance, key)
        assert instance.run("audit", "seal")[0] == 0
        if instance.database_url.startswith("postgresql"):
            guard = "ALTER TABLE azdev_audit_entry DISABLE TRIGGER ALL"
        else:
            guard = "DROP TRIGGER azdev_audit_entry_no_update"
        execute(
            instance.database_url,
            guard,
            "UPDATE azdev_audit_entry SET entry = replace(entry, 'gh:1:1', 'gh:1:9') WHERE idx = 5"
            if instance.database_url.startswith("sqlite")
            else "UPDATE azdev_audit_entry SET entry = "
            "convert_to(replace(convert_from(entry, 'UTF8'), 'gh:1:1', 'gh:1:9'), 'UTF8') "
            "WHERE idx = 5",
        )
        code, out, _ = instance.run("audit", "verify")
        assert code == 1
        assert "first bad entry index: 5" in out
        assert "RESULT: FAILED" in out
        code, out, _ = instance.run("audit", "verify", "--output", "json")
        assert code == 1
        assert json.loads(out)["shards"][0]["first_bad_index"] == 5

    def test_replay_finds_a_change_made_behind_the_services_back(self, node):
        instance, key, _ = node
        run_activity(instance, key)
        execute(instance.database_url, "UPDATE azdev_pipeline_run SET branch = 'sneaky'")
        code, out, _ = instance.run("audit", "replay")
        assert code == 1
        assert "azdev_pipeline_run gh:1:0: branch: live 'sneaky', ledger None" in out

    def test_erase(self, node):
        instance, _, _ = node
        code, _, err = instance.run("audit", "erase", "--kind", "email", "--value", "x@y.z")
        assert code == 3
        assert "no email with that value" in err

    def test_erase_an_email_from_the_people_table_too(self, node):
        instance, _, _ = node
        email = "jane.roe@example.org"
        code, _, err = instance.run("user", "add", email, "--name", "Jane Roe", "--email", email)
        assert code == 0, err
        code, erased, err = instance.run("audit", "erase", "--kind", "email", "--value", email)
        assert code == 0, err
        code, out, _ = instance.run("user", "list", "--all", "--output", "json")
        assert code == 0
        assert email not in out
        assert "Jane Roe" not in out
        assert "1 people" in erased
        assert instance.run("audit", "seal")[0] == 0
        code, out, _ = instance.run("audit", "verify")
        assert code == 0, out
        code, out, _ = instance.run("audit", "replay")
        assert code == 0, out

    def test_without_a_key_sealing_is_refused_with_the_reason(self, node):
        instance, _, _ = node
        (instance.data_dir / "ledger.key").unlink()
        code, _, err = instance.run("audit", "seal")
        assert code == 3
        assert "ica keys init" in err


def test_the_served_app_seals_in_the_background(node, monkeypatch):
    _, key, _ = node
    monkeypatch.setenv("ICA_LEDGER_SEAL_INTERVAL_SECONDS", "0.05")
    monkeypatch.setenv("ICA_LEDGER_CHECKPOINT_INTERVAL_SECONDS", "0.1")
    app = create_app(Settings())
    with TestClient(app) as client:
        body = {"provider": "gh", "project_id": "1", "run_id": "77", "pipeline_name": "ci"}
        client.post("/api/v1/azdev/run/start", json=body, headers=bearer(key))
        deadline = time.monotonic() + 15
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not found:
            page = client.post(
                "/api/v1/azdev/audit/query", json={"action": "run.start"}, headers=bearer(key)
            ).json()
            found = [i for i in page["items"] if i["subject_id"] == "gh:1:77"]
            time.sleep(0.05)
        assert found
        while time.monotonic() < deadline:
            proof = client.get(
                f"/api/v1/azdev/audit/entry/{found[0]['index']}", headers=bearer(key)
            )
            if proof.json()["status"] == "included":
                break
            time.sleep(0.05)
        assert proof.json()["status"] == "included"
        assert app.state.sealer.status == "ok"
    assert not app.state.sealer._thread.is_alive()
    app.state.ctx.db.dispose()
    assert EXAMPLE_POLICY.exists()
