"""Override count per quarter in the delivery metrics (versioned definition, per tenant and
fleet, against the policy's target), and the daily drill-overdue warning: once per tenant per
overdue period, moved by the injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import OutboxMessage
from azdev_ica.domain.metrics import DEFINITIONS, OverrideFact, Period, overrides_per_quarter
from azdev_ica.jobs.scheduler import tick
from azdev_ica.services import overrides
from azdev_ica.services.dr import RecordBackup, RecordDrill, record_backup, record_drill
from azdev_ica.services.dr_overdue import warn_overdue_drills
from tests.conftest import bearer
from tests.gates.conftest import PIPELINE, new_run

API = "/api/v1/azdev"
UTC0 = datetime(2026, 10, 1, tzinfo=UTC)


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 12, tzinfo=UTC)


class TestDefinition:
    def test_quarter_to_date_per_quarter_touched(self):
        facts = [
            OverrideFact("to", at(9, 30)),  # Q3
            OverrideFact("to", at(10, 2)),
            OverrideFact("ws", at(10, 20)),
            OverrideFact("to", at(11, 5)),
            OverrideFact("to", at(12, 30)),  # after the period
        ]
        november = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
        # Q4 to date at the end of November: October counts too, December not yet.
        assert overrides_per_quarter(november, facts) == (("2026-Q4", 3),)
        assert overrides_per_quarter(november, facts, tenant="to") == (("2026-Q4", 2),)
        year = Period(datetime(2026, 7, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
        assert overrides_per_quarter(year, facts) == (("2026-Q3", 1), ("2026-Q4", 4))
        assert DEFINITIONS["override_count_per_quarter"] == 1


def _signed_override(ctx: Any, signer: Any, tenant: str) -> None:
    run_key = new_run(ctx, tenant=tenant, coverage=10)
    asked = overrides.request_override(ctx, principal=PIPELINE, run_key=run_key, reason="hotfix")
    overrides.sign_override(
        ctx, principal=signer.principal(ctx), override_id=asked.override.id, approve=True
    )


def test_the_metrics_route_counts_overrides_against_the_target(
    client, ctx, clock, make_person, make_key
):
    ceo = make_person("ceo", [("azdev_override_signer", None)])
    clock.set(datetime(2026, 10, 5, 9, tzinfo=UTC))
    for tenant in ("to", "to", "to", "ws"):
        _signed_override(ctx, ceo, tenant)
    clock.set(datetime(2026, 11, 20, 9, tzinfo=UTC))
    # A pending (unsigned) override does not count.
    overrides.request_override(
        ctx, principal=PIPELINE, run_key=new_run(ctx, tenant="to", coverage=10), reason="x"
    )
    headers = bearer(make_key("azdev_auditor"))
    query = "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z"
    fleet = client.get(f"{API}/metrics/delivery?{query}", headers=headers).json()
    assert fleet["override_count_per_quarter"] == [
        {"quarter": "2026-Q4", "count": 4, "target": 2, "within_target": False}
    ]
    assert fleet["definitions"]["override_count_per_quarter"] == 1
    samoa = client.get(f"{API}/metrics/delivery?{query}&tenant=ws", headers=headers).json()
    assert samoa["override_count_per_quarter"][0]["count"] == 1
    assert samoa["override_count_per_quarter"][0]["within_target"] is True
    # A key scoped to Samoa sees Samoa's overrides only, even fleet-wide.
    scoped = bearer(make_key("azdev_auditor", ["ws"]))
    mine = client.get(f"{API}/metrics/delivery?{query}", headers=scoped).json()
    assert mine["override_count_per_quarter"][0]["count"] == 1


def _warnings(ctx: Any) -> list[tuple[str, str]]:
    with ctx.read() as session:
        return [
            (str(row.tenant), str(row.payload["summary"]))
            for row in session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.topic == "dr.drill_overdue")
                .order_by(OutboxMessage.id)
            )
        ]


def _drill(ctx: Any, ops: Any, tenant: str, *, passed: bool = True) -> None:
    now = ctx.clock.now()
    taken = record_backup(
        ctx,
        principal=ops,
        command=RecordBackup(
            tenant=tenant,
            stage="production",
            kind="database",
            taken_at=now - timedelta(hours=2, minutes=30),
            size_bytes=1,
            sha256="ab" * 32,
            encrypted=True,
            location="https://backups.example/x",
        ),
    )
    record_drill(
        ctx,
        principal=ops,
        command=RecordDrill(
            backup_id=taken.id,
            started_at=now - timedelta(hours=2),
            finished_at=now - timedelta(hours=1),
            succeeded=passed,
        ),
    )


def test_a_drill_overdue_warns_once_per_tenant_per_period(ctx, clock, settings):
    ops = PIPELINE  # azdev_devops for every tenant: records backups and drills
    tenants = ["ck", "sb", "to", "vu", "ws"]
    for tenant in tenants:
        if tenant != "to":
            _drill(ctx, ops, tenant)
    # Tonga never passed a drill, but was added to the policy just now: a quarter's grace.
    assert warn_overdue_drills(ctx) == []
    # 92 days later the others' drills are a quarter old (not more): still nothing.
    clock.advance(timedelta(days=92, hours=-1, minutes=-1))
    assert warn_overdue_drills(ctx) == []
    clock.advance(timedelta(minutes=2))
    assert warn_overdue_drills(ctx) == ["ck", "sb", "vu", "ws"]
    assert warn_overdue_drills(ctx) == []
    # A quarter after the policy added it, Tonga (still no drill) is overdue: once.
    clock.advance(timedelta(hours=1))
    assert warn_overdue_drills(ctx) == ["to"]
    assert warn_overdue_drills(ctx) == []
    assert "no DR drill has passed yet" in dict(_warnings(ctx))["to"]
    # Samoa drills again (a failed drill does not end the period; a passed one does).
    _drill(ctx, ops, "ws", passed=False)
    assert warn_overdue_drills(ctx) == []
    _drill(ctx, ops, "ws")
    clock.advance(timedelta(days=30))
    assert warn_overdue_drills(ctx) == []
    # ... and when that drill ages past a quarter, a new period: a new warning.
    clock.advance(timedelta(days=63))
    assert warn_overdue_drills(ctx) == ["ws"]
    assert [tenant for tenant, _ in _warnings(ctx)] == ["ck", "sb", "vu", "ws", "to", "ws"]


def test_the_scheduler_runs_the_warning(ctx, clock, settings):
    assert tick(ctx, settings, holder="h").ran["dr-drill-overdue"] == []  # first day: quiet
    clock.advance(timedelta(days=93))  # a quarter after the policy added them
    first = tick(ctx, settings, holder="h")
    assert first.failed == {}
    assert sorted(first.ran["dr-drill-overdue"]) == ["ck", "sb", "to", "vu", "ws"]
    assert tick(ctx, settings, holder="h").ran["dr-drill-overdue"] == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_processes_warn_once(ctx, clock, database):
    """Two jobs racing (as two processes whose leases overlapped) still warn once."""
    from concurrent.futures import ThreadPoolExecutor

    clock.advance(timedelta(days=93))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: warn_overdue_drills(ctx), range(2)))
    assert sorted(results[0] + results[1]) == ["ck", "sb", "to", "vu", "ws"]
    assert len(_warnings(ctx)) == 5
