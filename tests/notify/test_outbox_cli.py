"""`ica outbox list|retry` and `ica jobs tick` against the test database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.cli.main import main
from azdev_ica.db.tables import AuditInbox
from azdev_ica.jobs.delivery import deliver_due
from tests.notify.conftest import queue, rows


@pytest.fixture
def ica(monkeypatch: pytest.MonkeyPatch, settings: Any, capsys: Any) -> Any:
    monkeypatch.setenv("ICA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ICA_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ICA_SECRET_KEY", settings.secret_key.get_secret_value())

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out + err

    return run


def test_list_and_retry_failed_deliveries(ctx, settings, ica):
    failing = queue(ctx, channel="carrier_pigeon", to="secret@example.org")
    unrouted = queue(ctx)  # a notify row with no route
    deliver_due(ctx, settings)
    code, out = ica("outbox", "list", "--state", "failed", "--output", "json")
    assert code == 0
    [item] = json.loads(out)
    assert item["id"] == failing
    assert item["channel"] == "carrier_pigeon"
    assert item["state"] == "failed"
    assert item["last_error"] == "no sender for channel 'carrier_pigeon'"
    assert "secret@example.org" not in out  # payloads are never listed
    code, out = ica("outbox", "list")
    assert code == 0
    assert len(out.strip().splitlines()) == 2
    [line] = [line for line in out.splitlines() if line.split()[0] == str(unrouted)]
    assert "no route" in line
    code, out = ica("outbox", "list", "--state", "no_route", "--output", "json")
    assert [item["id"] for item in json.loads(out)] == [unrouted]

    code, out = ica("outbox", "retry", str(failing))
    assert code == 0
    assert out.strip() == f"requeued 1: {failing}"
    [row] = [r for r in rows(ctx) if r.id == failing]
    assert (row.state, row.attempts) == ("pending", 0)
    with ctx.read() as session:
        actions = list(session.scalars(select(AuditInbox.action)))
    assert actions.count("outbox.retry") == 1

    code, out = ica("outbox", "retry", str(failing), "999")  # neither is failed now
    assert code == 3
    assert f"not failed (or unknown): {failing} 999" in out


def test_jobs_tick_runs_the_jobs_once(ctx, ica):
    queue(ctx, channel="carrier_pigeon")
    code, out = ica("jobs", "tick")
    assert code == 0
    result = json.loads(out)
    assert result["failed"] == {}
    assert result["ran"]["outbox-delivery"]["failed"] == 1
    assert {"approval-sla", "approval-expiry"} <= set(result["ran"])
