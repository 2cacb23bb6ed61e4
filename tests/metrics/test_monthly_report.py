"""The monthly compliance report (seed 000 §4.1): the numbers of a small seeded month, per
tenant and fleet-wide, as JSON (stable schema) and as self-contained, escaped HTML; over
HTTP (auditor permission) and as `ica report monthly`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.cli.main import main
from azdev_ica.db.tables import AuditInbox, PolicyVersion
from azdev_ica.domain.incidents import IncidentStatus, Severity
from azdev_ica.domain.runs import Phase
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.queries.report import month_period, render_html
from azdev_ica.services import overrides
from azdev_ica.services.dr import RecordBackup, RecordDrill, record_backup, record_drill
from azdev_ica.services.gates import EvaluateGate, evaluate
from azdev_ica.services.incidents import OpenIncident, open_incident, set_status
from azdev_ica.services.policy_changes import propose_policy, sign_proposal
from azdev_ica.services.runs import FinishRun, RecordEvent, finish_run, record_event
from tests.conftest import bearer
from tests.gates.conftest import PIPELINE, approve, new_run

API = "/api/v1/azdev/report/monthly"


def _deploy(ctx: Any, run_key: str, status: str, finish: str) -> None:
    record_event(
        ctx,
        principal=PIPELINE,
        command=RecordEvent(run_key, Phase.DEPLOY, data={"status": status}),
    )
    finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key, finish))


@pytest.fixture
def november(ctx: Any, clock: Any, make_person: Any) -> dict[str, Any]:
    """A small November 2026 (the clock starts on the 2nd), sealed on the 30th."""
    people = {
        "alice": make_person("alice", [("azdev_approver_tech", None)]),
        "bob": make_person("bob", [("azdev_approver_biz", None)]),
        "dana": make_person("dana", [("azdev_devops", None)]),
        "ceo": make_person("ceo", [("azdev_override_signer", None)]),
    }
    clock.set(datetime(2026, 11, 3, 9, tzinfo=UTC))
    # Tonga: an approved, deployed release; a failed deployment; an authorised staging deploy.
    good = new_run(ctx, tenant="to")
    approve(ctx, {"alice": people["alice"], "bob": people["bob"]}, good)
    _deploy(ctx, good, "succeeded", "success")
    clock.advance(timedelta(days=1))
    bad = new_run(ctx, tenant="to")
    _deploy(ctx, bad, "failed", "failed")
    opened = open_incident(
        ctx,
        principal=PIPELINE,
        command=OpenIncident(title="deploy failed", severity=Severity.HIGH, run_key=bad),
    )
    clock.advance(timedelta(hours=2))
    set_status(
        ctx, principal=PIPELINE, incident_id=opened.incident.id, status=IncidentStatus.RESOLVED
    )
    staged = new_run(ctx, tenant="to", stage="staging")
    assert evaluate(ctx, principal=PIPELINE, command=EvaluateGate(staged)).status == "allow"
    _deploy(ctx, staged, "succeeded", "success")
    # An emergency override for Tonga, signed.
    hotfix = new_run(ctx, tenant="to", coverage=10)
    asked = overrides.request_override(ctx, principal=PIPELINE, run_key=hotfix, reason="CVE")
    overrides.sign_override(
        ctx, principal=people["ceo"].principal(ctx), override_id=asked.override.id, approve=True
    )
    # Samoa: one deployment, an incident still open at the month's end, no drill ever.
    clock.set(datetime(2026, 11, 10, 9, tzinfo=UTC))
    samoa = new_run(ctx, tenant="ws")
    _deploy(ctx, samoa, "succeeded", "success")
    open_incident(
        ctx,
        principal=PIPELINE,
        command=OpenIncident(title="slow", severity=Severity.LOW, tenant="ws"),
    )
    # Tonga's backups and a passed drill.
    clock.set(datetime(2026, 11, 15, 9, tzinfo=UTC))
    taken = record_backup(
        ctx,
        principal=PIPELINE,
        command=RecordBackup(
            tenant="to",
            stage="production",
            kind="database",
            taken_at=clock.now() - timedelta(minutes=10),
            size_bytes=10,
            sha256="ab" * 32,
            encrypted=True,
            location="https://backups.example/to",
        ),
    )
    record_backup(
        ctx,
        principal=PIPELINE,
        command=RecordBackup(
            tenant="to",
            stage="production",
            kind="files",
            taken_at=clock.now(),
            size_bytes=10,
            sha256="cd" * 32,
            encrypted=False,
            location="https://backups.example/to-files",
        ),
    )
    clock.advance(timedelta(hours=1))
    record_drill(
        ctx,
        principal=PIPELINE,
        command=RecordDrill(
            backup_id=taken.id,
            started_at=clock.now() - timedelta(minutes=30),
            finished_at=clock.now(),
            succeeded=True,
        ),
    )
    # A governed policy change, activated on the 20th.
    clock.set(datetime(2026, 11, 20, 9, tzinfo=UTC))
    with ctx.read() as session:
        document = session.scalars(select(PolicyVersion.document)).first()
    proposal = propose_policy(
        ctx,
        principal=people["dana"].principal(ctx),
        document=document.replace("name: Tonga", "name: Tonga (Kingdom of)"),
        reason="official name",
    ).proposal
    for signer in ("alice", "bob"):
        sign_proposal(
            ctx, principal=people[signer].principal(ctx), proposal_id=proposal.id, approve=True
        )
    clock.set(datetime(2026, 11, 30, 23, tzinfo=UTC))
    seal_now(ctx)
    # December: nothing of it belongs to November.
    clock.set(datetime(2026, 12, 2, 9, tzinfo=UTC))
    late = new_run(ctx, tenant="to")
    _deploy(ctx, late, "failed", "failed")
    seal_now(ctx)
    return {"people": people, "proposal": proposal}


def test_the_numbers_of_a_seeded_month(client, ctx, make_key, november):
    answer = client.get(f"{API}?month=2026-11", headers=bearer(make_key("azdev_auditor")))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["report"] == "ica-monthly-compliance"
    assert report["schema_version"] == 1
    assert report["period"] == {
        "start": "2026-11-01T00:00:00.000000Z",
        "end": "2026-12-01T00:00:00.000000Z",
    }
    to, ws, fleet = report["tenants"]["to"], report["tenants"]["ws"], report["fleet"]
    assert sorted(report["tenants"]) == ["ck", "sb", "to", "vu", "ws"]
    assert to["runs"] == {"finished": 3, "succeeded": 2, "failed": 1, "success_rate": 2 / 3}
    assert fleet["runs"] == {"finished": 4, "succeeded": 3, "failed": 1, "success_rate": 0.75}
    assert to["deployments"]["production"] == 2
    assert to["deployments"]["succeeded"] == 1
    assert to["deployments"]["failed_changes"] == 1
    assert to["deployments"]["change_failure_rate"] == 0.5
    assert fleet["deployments"]["production"] == 3
    assert fleet["deployments"]["change_failure_rate"] == pytest.approx(1 / 3)
    assert to["mttr_seconds"] == 7200.0
    assert ws["mttr_seconds"] is None
    assert to["approvals"] == {"decided": 1, "within_sla": 1, "sla_compliance": 1.0}
    assert ws["approvals"] == {"decided": 0, "within_sla": 0, "sla_compliance": None}
    assert to["overrides"] == {
        "signed_in_month": 1,
        "quarter": "2026-Q4",
        "quarter_to_date": 1,
        "target": 2,
        "within_target": True,
    }
    # Deploys with no allow decision: Tonga's two production ones (the approval alone is not
    # the gate's allow) and Samoa's; the staging deploy had the gate's allow.
    assert to["unauthorised_changes"] == 2
    assert ws["unauthorised_changes"] == 1
    assert fleet["unauthorised_changes"] == 3
    assert to["incidents"] == {"opened": 1, "resolved": 1, "open_at_month_end": 0}
    assert ws["incidents"] == {"opened": 1, "resolved": 0, "open_at_month_end": 1}
    assert to["dr"]["backups"] == 2
    assert to["dr"]["backups_unencrypted"] == 1
    assert to["dr"]["drills"] == 1
    assert to["dr"]["drills_passed"] == 1
    assert to["dr"]["last_passed_drill_at"] == "2026-11-15T10:00:00.000000Z"
    assert to["dr"]["drill_overdue_at_month_end"] is False
    assert ws["dr"]["drill_overdue_at_month_end"] is True
    assert fleet["dr"]["drill_overdue_at_month_end"] is True
    versions = report["policy"]["versions_activated"]
    assert [v["via"] for v in versions] == ["direct", "proposal"]
    people = november["people"]
    assert versions[1]["proposal_id"] == november["proposal"].id
    assert versions[1]["signers"] == sorted([people["alice"].person_id, people["bob"].person_id])
    assert report["policy"]["active_sha256"] == versions[1]["sha256"]
    ledger = report["ledger"]
    assert ledger["origin"] == "ica.localhost/audit/2026"
    with ctx.read() as session:
        in_month = len(
            list(
                session.scalars(
                    select(AuditInbox.id).where(
                        AuditInbox.created_at < datetime(2026, 12, 1, tzinfo=UTC)
                    )
                )
            )
        )
    # Every action of the month, and the shard's own first entry (ledger.open).
    assert ledger["entries_in_month"] == in_month + 1
    assert ledger["size_at_month_end"] == in_month + 1
    assert ledger["checkpoint_at_month_end"]["size"] == in_month + 1
    assert ledger["checkpoint_at_month_end"]["signed_at"] == "2026-11-30T23:00:00.000000Z"
    assert ledger["covering_checkpoint"] == ledger["checkpoint_at_month_end"]
    # One tenant only: no fleet section.
    one = client.get(
        f"{API}?month=2026-11&tenant=ws", headers=bearer(make_key("azdev_auditor"))
    ).json()
    assert one["fleet"] is None
    assert list(one["tenants"]) == ["ws"]
    assert one["tenants"]["ws"] == ws


def test_scope_and_bad_input(client, make_key, november):
    national = bearer(make_key("tenant_admin", ["ws"]))
    mine = client.get(f"{API}?month=2026-11", headers=national).json()
    assert list(mine["tenants"]) == ["ws"]
    assert mine["fleet"]["runs"]["finished"] == 1
    assert client.get(f"{API}?month=2026-11&tenant=to", headers=national).status_code == 403
    auditor = bearer(make_key("azdev_auditor"))
    for query in ("month=2026-13", "month=26-11", "month=1999-01", "", "month=2026-11&tenant=xx"):
        answer = client.get(f"{API}?{query}", headers=auditor)
        assert 400 <= answer.status_code < 500, (query, answer.text)
    assert (
        client.get(f"{API}?month=2026-11", headers=bearer(make_key("azdev_devops"))).status_code
        == 403
    )


def test_html_is_self_contained_and_escaped(client, make_key, november):
    answer = client.get(
        f"{API}?month=2026-11&format=html", headers=bearer(make_key("azdev_auditor"))
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    page = answer.text
    assert "<script" not in page.lower()
    assert "src=" not in page
    assert "http://" not in page
    assert "https://" not in page
    assert "Monthly compliance report 2026-11" in page
    assert "<td>66.7 %</td>" in page  # Tonga's success rate
    report = client.get(f"{API}?month=2026-11", headers=bearer(make_key("azdev_auditor"))).json()
    report["policy"]["versions_activated"][0]["applied_by"] = "<script>alert(1)</script>"
    report["month"] = '"><img src=x onerror=alert(1)>'
    evil = render_html(report)
    assert "<script>alert" not in evil
    assert "<img" not in evil
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in evil


def test_month_parsing():
    period = month_period("2026-12")
    assert (period.start, period.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_the_cli_writes_json_and_html(monkeypatch, settings, november, tmp_path, capsys):
    monkeypatch.setenv("ICA_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ICA_DATABASE_URL", settings.resolved_database_url())
    monkeypatch.setenv("ICA_SECRET_KEY", settings.secret_key.get_secret_value())
    assert main(["report", "monthly", "--month", "2026-11", "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tenants"]["to"]["runs"]["finished"] == 3
    out = tmp_path / "report.html"
    assert (
        main(["report", "monthly", "--month", "2026-11", "--tenant", "to", "--out", str(out)]) == 0
    )
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Fleet" not in page
    assert main(["report", "monthly", "--month", "2026-11", "--tenant", "xx"]) == 3
    assert "not in the active policy" in capsys.readouterr().err
    for month in ("2026-13", "november"):
        with pytest.raises(SystemExit) as caught:
            main(["report", "monthly", "--month", month])
        assert caught.value.code == 64
