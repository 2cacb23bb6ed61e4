"""`ica doctor` at the CLI: a healthy installation passes every check (exit 0), and each
check fails, saying what to fix (exit 1), on an installation broken on purpose."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from azdev_ica.cli.main import main
from azdev_ica.ledger.cosignature import Cosigner

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def doctor(capsys: Any) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    """Run `ica doctor --output json`: its exit code and its findings by check."""
    capsys.readouterr()
    code = main(["doctor", "--output", "json"])
    report = json.loads(capsys.readouterr().out)
    by_check: dict[str, list[dict[str, Any]]] = {}
    for finding in report["checks"]:
        by_check.setdefault(finding["check"], []).append(finding)
    assert report["ok"] is (code == 0)
    return code, by_check


def failing(by_check: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {name for name, found in by_check.items() if any(f["status"] == "fail" for f in found)}


def install(monkeypatch: pytest.MonkeyPatch, capsys: Any, data_dir: Path, url: str = "") -> Path:
    """A working installation made with the CLI: `ica init` (secret, ledger key, schema,
    policy), then a sealed checkpoint."""
    monkeypatch.setenv("ICA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ICA_PUBLIC_URL", "https://ica.example.org")
    if url:
        monkeypatch.setenv("ICA_DATABASE_URL", url)
    for name in ("ICA_SECRET_KEY", "ICA_WITNESSES", "ICA_SECRETS_DIR", "ICA_DATABASE_URL"):
        if name != "ICA_DATABASE_URL" or not url:
            monkeypatch.delenv(name, raising=False)
    assert main(["init", "--policy", str(ROOT / "examples/policy.yaml")]) == 0
    assert main(["audit", "seal"]) == 0
    capsys.readouterr()
    return data_dir


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Path:
    return install(monkeypatch, capsys, tmp_path / "var")


def test_a_healthy_installation_passes(installed, capsys):
    code, found = doctor(capsys)
    assert failing(found) == set()
    assert code == 0
    assert {"public-url", "secret-key", "ledger-key", "database", "migrations", "clock"} <= set(
        found
    )
    assert {"checkpoint", "witnesses", "outbox"} <= set(found)
    # The text report says so too.
    assert main(["doctor"]) == 0
    assert capsys.readouterr().out.strip().endswith("all good")


def test_public_url_not_set(installed, capsys, monkeypatch):
    monkeypatch.delenv("ICA_PUBLIC_URL")
    code, found = doctor(capsys)
    assert (code, failing(found)) == (1, {"public-url"})
    assert "ICA_PUBLIC_URL" in found["public-url"][0]["fix"]


def test_keys_readable_by_others(installed, capsys):
    (installed / "ledger.key").chmod(0o644)
    (installed / "secret.key").chmod(0o640)
    code, found = doctor(capsys)
    assert (code, failing(found)) == (1, {"ledger-key", "secret-key"})
    assert found["ledger-key"][0]["fix"] == f"chmod 600 {installed / 'ledger.key'}"
    assert "0644" in found["ledger-key"][0]["detail"]


def test_ledger_key_missing(installed, capsys):
    (installed / "ledger.key").unlink()
    code, found = doctor(capsys)
    assert code == 1
    assert "ledger-key" in failing(found)
    assert "missing" in found["ledger-key"][0]["detail"]
    assert found["ledger-key"][0]["fix"] == "run `ica keys init`"


def test_database_unreachable(installed, capsys, monkeypatch):
    monkeypatch.setenv(
        "ICA_DATABASE_URL", f"postgresql://ica:x@127.0.0.1:{_closed_port()}/ica?connect_timeout=5"
    )
    code, found = doctor(capsys)
    assert code == 1
    assert found["database"][0]["status"] == "fail"
    assert "unreachable" in found["database"][0]["detail"]
    # What depends on the database is reported as not checked, never as fine.
    assert {"migrations", "clock", "checkpoint", "witnesses", "outbox"} <= failing(found)


def test_no_database_file_is_not_created(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ICA_DATA_DIR", str(tmp_path / "nothing-here"))
    code, found = doctor(capsys)
    assert code == 1
    assert "ica init" in found["database"][0]["fix"]
    assert not (tmp_path / "nothing-here" / "ica.db").exists()


def test_schema_behind(installed, capsys):
    engine = create_engine(f"sqlite:///{installed / 'ica.db'}")
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0021_accounts'"))
    engine.dispose()
    code, found = doctor(capsys)
    assert code == 1
    assert "migrations" in failing(found)
    assert "0021_accounts" in found["migrations"][0]["detail"]
    assert found["migrations"][0]["fix"] == "run `ica db upgrade`"


def test_ledger_not_sealing(installed, capsys, monkeypatch):
    # An audited action nobody seals, with a stall threshold it is already past.
    monkeypatch.setenv("ICA_LEDGER_STALL_AFTER_SECONDS", "0.000001")
    assert main(["apikey", "create", "--name", "later", "--role", "azdev_auditor"]) == 0
    code, found = doctor(capsys)
    assert (code, failing(found)) == (1, {"checkpoint"})
    assert "stalled" in found["checkpoint"][0]["detail"]


def test_witness_unreachable(installed, capsys, monkeypatch):
    vkey = Cosigner.generate("witness.test/w1").verifier().key_string()
    witnesses = [{"url": f"http://127.0.0.1:{_closed_port()}/w1", "vkey": vkey}]
    monkeypatch.setenv("ICA_WITNESSES", json.dumps(witnesses))
    code, found = doctor(capsys)
    assert (code, failing(found)) == (1, {"witness witness.test/w1"})
    assert "cannot be reached" in found["witness witness.test/w1"][0]["detail"]


def test_outbox_failures_and_backlog(installed, capsys):
    engine = create_engine(f"sqlite:///{installed / 'ica.db'}")
    with engine.begin() as connection:
        for state, created in (("failed", "2026-01-01 00:00:00"), ("pending", "2026-01-01")):
            connection.execute(
                text(
                    "INSERT INTO azdev_outbox (created_at, topic, channel, tenant, subject_type,"
                    " subject_id, payload, state, attempts, next_attempt_at) VALUES (:at,"
                    " 'approval.requested', 'email', 'to', 'approval', '1', '{}', :state, 8,"
                    " :at)"
                ),
                {"at": created, "state": state},
            )
    engine.dispose()
    code, found = doctor(capsys)
    assert (code, failing(found)) == (1, {"outbox"})
    details = " | ".join(f["detail"] for f in found["outbox"])
    assert "1 messages failed" in details
    assert "1 messages have waited" in details


def test_clock_skew_against_postgresql(tmp_path, capsys, monkeypatch, pg_url):
    install(monkeypatch, capsys, tmp_path / "var", pg_url)
    code, found = doctor(capsys)
    assert found["clock"][0]["status"] == "ok"
    from azdev_ica.clock import SystemClock

    real_now = SystemClock.now
    monkeypatch.setattr(SystemClock, "now", lambda self: real_now(self) + timedelta(minutes=3))
    code, found = doctor(capsys)
    assert code == 1
    assert "clock" in failing(found)
    assert "+180" in found["clock"][0]["detail"]
