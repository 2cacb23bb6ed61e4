"""Backups and DR drills over HTTP, on both databases: evidence recorded and audited, RTO and
RPO measured against the seed's targets (4 h, 1 h), failures and unencrypted backups alert,
a tenant without a passed drill in the last quarter is overdue; records are append-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from azdev_ica.db.tables import AuditInbox, OutboxMessage
from azdev_ica.domain.dr import DRILL_EVERY, DrillRefused, drill_overdue, measure
from tests.conftest import bearer

API = "/api/v1/azdev"
SHA = "ab" * 32


@pytest.fixture
def ops(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops"))


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def backup(client: Any, headers: dict[str, str], at: datetime, **extra: Any) -> Any:
    body = {
        "tenant": "ws",
        "stage": "production",
        "kind": "database",
        "taken_at": iso(at),
        "size_bytes": 7_340_032,
        "sha256": SHA,
        "encrypted": True,
        "location": "https://backups.example/ws/prod/2026-11-02.dump",
        **extra,
    }
    return client.post(f"{API}/dr/backup", json=body, headers=headers)


def test_a_quarterly_drill_end_to_end(client, ops, clock, ctx):
    now = clock.now()
    status = client.get(f"{API}/dr/status?tenant=ws", headers=ops).json()
    assert status == [
        {
            "tenant": "ws",
            "last_backup_at": None,
            "last_drill_at": None,
            "last_passed_drill_at": None,
            "drill_overdue": False,  # added to the policy just now: a quarter's grace
        }
    ]
    taken = backup(client, ops, now - timedelta(minutes=50))
    assert taken.status_code == 201, taken.text
    drill = client.post(
        f"{API}/dr/drill",
        json={
            "backup_id": taken.json()["id"],
            "started_at": iso(now - timedelta(minutes=10)),
            "finished_at": iso(now),
            "succeeded": True,
            "notes": "restored into ws-dr, smoke tests green",
        },
        headers=ops,
    )
    assert drill.status_code == 201, drill.text
    measured = drill.json()
    assert (measured["rto_seconds"], measured["rpo_seconds"]) == (600, 40 * 60)
    assert measured["passed"] is True
    assert measured["tenant"] == "ws"
    status = client.get(f"{API}/dr/status?tenant=ws", headers=ops).json()[0]
    assert status["drill_overdue"] is False
    clock.advance(DRILL_EVERY + timedelta(seconds=1))
    assert client.get(f"{API}/dr/status?tenant=ws", headers=ops).json()[0]["drill_overdue"]
    with ctx.read() as session:
        actions = list(session.scalars(select(AuditInbox.action)))
    assert actions.count("backup.record") == 1
    assert actions.count("dr.drill") == 1


def test_a_missed_target_or_a_failed_restore_does_not_pass_and_alerts(client, ops, clock, ctx):
    now = clock.now()
    old = backup(client, ops, now - timedelta(hours=3)).json()["id"]  # RPO 3 h > 1 h
    slow = client.post(
        f"{API}/dr/drill",
        json={
            "backup_id": old,
            "started_at": iso(now - timedelta(minutes=5)),
            "finished_at": iso(now),
            "succeeded": True,
        },
        headers=ops,
    ).json()
    assert slow["passed"] is False
    fresh = backup(client, ops, now - timedelta(minutes=1)).json()["id"]
    failed = client.post(
        f"{API}/dr/drill",
        json={
            "backup_id": fresh,
            "started_at": iso(now),
            "finished_at": iso(now),
            "succeeded": False,
        },
        headers=ops,
    ).json()
    assert failed["passed"] is False
    status = client.get(f"{API}/dr/status?tenant=ws", headers=ops).json()[0]
    assert status["last_passed_drill_at"] is None  # neither passed
    clock.advance(DRILL_EVERY + timedelta(seconds=1))  # a quarter after the tenant was added
    assert client.get(f"{API}/dr/status?tenant=ws", headers=ops).json()[0]["drill_overdue"]
    with ctx.read() as session:
        topics = list(session.scalars(select(OutboxMessage.topic)))
    assert topics.count("dr.drill_failed") == 2


def test_an_unencrypted_backup_is_recorded_and_alerts(client, ops, clock, ctx):
    assert backup(client, ops, clock.now(), encrypted=False).status_code == 201
    with ctx.read() as session:
        assert list(session.scalars(select(OutboxMessage.topic))) == ["backup.unencrypted"]


def test_tenant_scope(client, make_key, clock):
    tonga = bearer(make_key("azdev_devops", ["to"]))
    samoa = bearer(make_key("azdev_devops", ["ws"]))
    assert backup(client, tonga, clock.now()).status_code == 403
    mine = backup(client, samoa, clock.now()).json()["id"]
    drill = client.post(
        f"{API}/dr/drill",
        json={
            "backup_id": mine,
            "started_at": iso(clock.now()),
            "finished_at": iso(clock.now()),
            "succeeded": True,
        },
        headers=tonga,
    )
    assert drill.status_code == 404
    assert [row["tenant"] for row in client.get(f"{API}/dr/status", headers=tonga).json()] == ["to"]


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"sha256": "xyz"}, 422),
        ({"size_bytes": -1}, 422),
        ({"tenant": "zz"}, 422),
        ({"stage": "moon"}, 422),
        ({"taken_at": "2099-01-01T00:00:00Z"}, 422),
        ({"encrypted": "yes"}, 422),
        ({"size_bytes": "12"}, 422),
    ],
)
def test_bad_backups_are_problems(client, ops, clock, change, status):
    answer = backup(client, ops, clock.now(), **change)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_drill_before_its_backup_or_ending_before_it_starts_is_refused(client, ops, clock):
    now = clock.now()
    taken = backup(client, ops, now - timedelta(minutes=5)).json()["id"]
    for started, finished in (
        (now - timedelta(minutes=10), now),  # restores a backup taken after it started
        (now, now - timedelta(minutes=1)),  # ends before it starts
    ):
        answer = client.post(
            f"{API}/dr/drill",
            json={
                "backup_id": taken,
                "started_at": iso(started),
                "finished_at": iso(finished),
                "succeeded": True,
            },
            headers=ops,
        )
        assert answer.status_code == 422, answer.text


def test_evidence_is_append_only(client, ops, clock, database):
    backup(client, ops, clock.now())
    for statement in ("UPDATE azdev_backup SET encrypted = true", "DELETE FROM azdev_backup"):
        with pytest.raises(DBAPIError, match="append-only"), database.engine.begin() as conn:
            conn.execute(text(statement))


# --- the pure rules -----------------------------------------------------------------------

MINUTES = st.integers(min_value=0, max_value=60 * 24 * 30)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@given(MINUTES, MINUTES, st.booleans())
def test_a_drill_passes_exactly_within_both_targets(before, duration, succeeded):
    started = T0 + timedelta(minutes=before)
    result = measure(
        backup_taken_at=T0,
        started_at=started,
        finished_at=started + timedelta(minutes=duration),
        succeeded=succeeded,
    )
    assert result.rpo == timedelta(minutes=before)
    assert result.rto == timedelta(minutes=duration)
    assert result.passed == (succeeded and duration <= 240 and before <= 60)


@given(MINUTES)
def test_impossible_drills_are_refused(minutes):
    later = T0 + timedelta(minutes=minutes + 1)
    with pytest.raises(DrillRefused):
        measure(backup_taken_at=later, started_at=T0, finished_at=later, succeeded=True)
    with pytest.raises(DrillRefused):
        measure(backup_taken_at=T0, started_at=later, finished_at=T0, succeeded=True)


@given(st.integers(min_value=0, max_value=400))
def test_overdue_after_a_quarter(days):
    now = T0 + timedelta(days=days)
    assert drill_overdue(None, now)
    assert drill_overdue(T0, now) == (timedelta(days=days) > DRILL_EVERY)
    # Never drilled: a quarter from when the tenant was added; a passed drill counts first.
    assert drill_overdue(None, now, added_at=T0) == (timedelta(days=days) > DRILL_EVERY)
    assert drill_overdue(now, now, added_at=T0) is False


def test_backups_and_drills_replay_from_the_ledger(client, ops, clock, ctx, database):
    from azdev_ica.audit.replay import replay_ledger

    now = clock.now()
    taken = backup(client, ops, now - timedelta(minutes=30)).json()["id"]
    client.post(
        f"{API}/dr/drill",
        json={
            "backup_id": taken,
            "started_at": iso(now - timedelta(minutes=20)),
            "finished_at": iso(now),
            "succeeded": True,
        },
        headers=ops,
    )
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert report.rows["azdev_backup"] == (1, 1)
    assert report.rows["azdev_dr_drill"] == (1, 1)
