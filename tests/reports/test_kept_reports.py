"""The monthly compliance report kept by the scheduler, on both databases, with the injected
clock: kept on the first of the month for the month before, once, mailed to the recipients
configured for `report.monthly`, listed and downloaded over the API by all-tenant auditors
only (to anyone else a kept report is absent)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import AuditInbox, MonthlyReportRecord, OutboxMessage
from azdev_ica.jobs.scheduler import default_jobs, tick
from azdev_ica.services.monthly_reports import keep_monthly_report, previous_month
from tests.audit.ledgerdb import activity
from tests.conftest import bearer
from tests.notify.conftest import with_notify
from tests.notify.listeners import SmtpListener

KEPT = "/api/v1/azdev/report/monthly/kept"


@pytest.fixture
def smtp() -> Iterator[SmtpListener]:
    listener = SmtpListener().start()
    yield listener
    listener.stop()


def _kept(ctx: Any) -> list[str]:
    with ctx.read() as session:
        return list(session.scalars(select(MonthlyReportRecord.month)))


def test_previous_month_crosses_the_year() -> None:
    assert previous_month(datetime(2027, 1, 1, 0, 0, tzinfo=UTC)) == "2026-12"
    assert previous_month(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == "2026-11"


def test_the_scheduler_keeps_last_months_report_on_the_first_once_and_mails_it(
    ctx: Any, settings: Any, smtp: SmtpListener, make_person: Any
) -> None:
    make_person("ada", [("azdev_auditor", None)], email="ada@example.org")
    configured = with_notify(
        settings,
        {
            "channels": {"mail": {"type": "email", "to": ["compliance@example.org"]}},
            "routes": [{"topics": ["report.monthly"], "channels": ["mail"]}],
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "from_address": "ica@example.org"},
        },
    )
    jobs = [job for job in default_jobs() if job.name in ("monthly-report", "outbox-delivery")]
    # 2 November: October's report is due (nothing happened in it) and kept at the first tick.
    assert tick(ctx, configured, holder="a", jobs=jobs).ran["monthly-report"] == "2026-10"
    assert tick(ctx, configured, holder="a", jobs=jobs).ran["monthly-report"] is None
    activity(ctx, 3)  # runs in November
    ctx.clock.set(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    assert tick(ctx, configured, holder="a", jobs=jobs).ran["monthly-report"] is None
    assert _kept(ctx) == ["2026-10"]

    smtp.messages.clear()
    ctx.clock.set(datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC))
    result = tick(ctx, configured, holder="a", jobs=jobs)
    assert result.ran["monthly-report"] == "2026-11"
    assert sorted(_kept(ctx)) == ["2026-10", "2026-11"]
    # Another process (or a later tick) does not keep it again, nor mail it again.
    assert keep_monthly_report(ctx, month="2026-11") is False
    assert tick(ctx, configured, holder="b", jobs=jobs).ran == {}  # a holds the lease
    ctx.clock.set(datetime(2026, 12, 1, 0, 5, tzinfo=UTC))
    assert tick(ctx, configured, holder="a", jobs=jobs).ran["monthly-report"] is None

    with ctx.read() as session:
        row = session.get(MonthlyReportRecord, "2026-11")
        outbox = list(
            session.scalars(select(OutboxMessage).where(OutboxMessage.topic == "report.monthly"))
        )
        records = list(
            session.scalars(
                select(AuditInbox.body).where(AuditInbox.action == "report.monthly_kept")
            )
        )
    report = json.loads(row.json_text)
    assert report["month"] == "2026-11"
    assert report["fleet"]["runs"]["finished"] == 3
    assert report["generated_at"].startswith("2026-12-01T00:00:05")
    assert row.sha256 == hashlib.sha256(row.json_text.encode()).hexdigest()
    assert "<html" in row.html_text.lower()
    assert "2026-11" in row.html_text
    assert len(records) == 2  # one per kept month, in the ledger with its hash
    assert row.sha256.encode() in records[-1]
    assert [m.payload["month"] for m in outbox if m.channel == "notify"] == ["2026-10", "2026-11"]

    received = sorted(address for m in smtp.messages for address in m.rcpt_tos)
    assert received == ["ada@example.org", "compliance@example.org"]
    text = smtp.messages[0].content.decode()
    assert "Monthly compliance report 2026-11 kept: 3 runs finished" in text
    assert "https://ica.localhost/reports/2026-11" in text


def test_kept_reports_over_the_api_for_all_tenant_auditors_only(
    ctx: Any, client: Any, make_key: Any
) -> None:
    activity(ctx, 2)
    ctx.clock.set(datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    assert keep_monthly_report(ctx, month="2026-11")
    auditor = bearer(make_key("azdev_auditor"))
    listed = client.get(KEPT, headers=auditor)
    assert listed.status_code == 200
    (item,) = listed.json()["reports"]
    assert item["month"] == "2026-11"
    assert item["json_url"] == f"{KEPT}/2026-11?format=json"

    as_json = client.get(item["json_url"], headers=auditor)
    assert as_json.status_code == 200
    assert as_json.headers["content-type"].startswith("application/json")
    assert hashlib.sha256(as_json.content).hexdigest() == item["json_sha256"]
    assert as_json.json()["fleet"]["runs"]["finished"] == 2
    as_html = client.get(item["html_url"], headers=auditor)
    assert as_html.status_code == 200
    assert as_html.headers["content-security-policy"].startswith("default-src 'none'")
    assert len(as_html.content) == item["html_bytes"]

    # A tenant-scoped auditor: the kept report holds other tenants, so it is absent to them,
    # exactly like a month never kept.
    scoped = bearer(make_key("azdev_auditor", tenants=["ws"]))
    assert client.get(KEPT, headers=scoped).json() == {"reports": []}
    hidden = client.get(f"{KEPT}/2026-11", headers=scoped)
    absent = client.get(f"{KEPT}/2026-09", headers=auditor)
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json()["type"] == absent.json()["type"]
    # No permission at all: 403; a bad month: a 422 problem.
    devops = bearer(make_key("azdev_devops"))
    assert client.get(KEPT, headers=devops).status_code == 403
    bad = client.get(f"{KEPT}/2026-13", headers=auditor)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
