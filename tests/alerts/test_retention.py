"""Retention (seed 000 §4.2): the `retention` job deletes delivered and failed notifications
after `retention.outbox_days`, ended web sessions after `retention.sessions_days` and sign-in
throttle rows after a day, in bounded batches, each batch audited; never the audit ledger."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import AuditInbox, OutboxMessage, SignInThrottle, WebSession
from azdev_ica.errors import PolicyError, SignInFailed
from azdev_ica.jobs.delivery import deliver_due
from azdev_ica.jobs.scheduler import tick
from azdev_ica.policy import parse_policy
from azdev_ica.services.credentials import SignInRules, sign_in_with_password
from azdev_ica.services.policies import apply_policy
from azdev_ica.services.retention import purge
from azdev_ica.services.sessions import SessionRules, end_session
from tests.conftest import T0, enrol_with_link, example_policy
from tests.notify.conftest import queue, with_notify
from tests.notify.listeners import HttpRecorder

OPERATOR = Actor(kind="operator", id="test")
PASSWORD = "correct horse battery staple"
RULES = SignInRules(hash_profile="cheapest")
DAY = timedelta(days=1)


def states(ctx: Any) -> list[tuple[str, str]]:
    with ctx.read() as session:
        return sorted(
            (row.channel, row.state)
            for row in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        )


def count(ctx: Any, table: Any) -> int:
    with ctx.read() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def purges(ctx: Any) -> list[tuple[str, int]]:
    """(kind, deleted) of every retention.purge audit record."""
    import json

    with ctx.read() as session:
        return [
            (body["data"]["kind"], body["data"]["deleted"])
            for body in (
                json.loads(raw)
                for raw in session.scalars(
                    select(AuditInbox.body)
                    .where(AuditInbox.action == "retention.purge")
                    .order_by(AuditInbox.id)
                )
            )
        ]


@pytest.fixture
def listeners() -> Any:
    ok, refusing, busy = HttpRecorder(), HttpRecorder(ok_status=400), HttpRecorder(ok_status=503)
    for recorder in (ok, refusing, busy):
        recorder.start()
    yield ok, refusing, busy
    for recorder in (ok, refusing, busy):
        recorder.stop()


def test_old_delivered_and_failed_notifications_go_pending_ones_stay(ctx, clock, settings,
                                                                     listeners):  # fmt: skip
    ok, refusing, busy = listeners
    routed = with_notify(
        settings,
        {
            "channels": {
                "ok": {"type": "webhook", "url": ok.url},
                "refusing": {"type": "webhook", "url": refusing.url},
                "busy": {"type": "webhook", "url": busy.url},
            },
            "routes": [
                {"topics": ["t.ok"], "channels": ["ok"]},
                {"topics": ["t.refused"], "channels": ["refusing"]},
                {"topics": ["t.busy"], "channels": ["busy"]},
            ],
        },
    )
    for topic in ("t.ok", "t.refused", "t.busy"):
        queue(ctx, topic=topic)
    deliver_due(ctx, routed)
    assert states(ctx) == [
        ("notify", "delivered"),
        ("notify", "delivered"),
        ("notify", "delivered"),
        ("webhook", "delivered"),
        ("webhook", "failed"),
        ("webhook", "pending"),
    ]
    clock.advance(timedelta(days=60))
    queue(ctx, topic="t.ok")
    deliver_due(ctx, routed)  # a recent pair, and the busy row still pending
    clock.set(T0 + timedelta(days=90))
    assert purge(ctx).purged["outbox"] == 0  # exactly 90 days: kept
    clock.advance(timedelta(seconds=1))
    assert purge(ctx).purged["outbox"] == 4  # delivered 90 days ago
    # The failed row gave up when its claim ended (ICA_OUTBOX_CLAIM_SECONDS after the try).
    clock.advance(timedelta(seconds=settings.outbox_claim_seconds))
    assert purge(ctx).purged["outbox"] == 1
    assert states(ctx) == [
        ("notify", "delivered"),
        ("webhook", "delivered"),
        ("webhook", "pending"),
    ]
    assert purges(ctx) == [("outbox", 4), ("outbox", 1)]
    assert purge(ctx).purged["outbox"] == 0
    assert purges(ctx) == [("outbox", 4), ("outbox", 1)]  # nothing deleted, nothing recorded


def test_the_policy_sets_the_outbox_days(ctx, clock, settings):
    apply_policy(
        ctx,
        actor=OPERATOR,
        document=example_policy() + "\nretention:\n  outbox_days: 10\n",
        source="test-policy",
    )
    queue(ctx, topic="nowhere")
    deliver_due(ctx, settings)  # no routes: settled at once (no_route)
    clock.advance(timedelta(days=10, seconds=1))
    assert purge(ctx).purged["outbox"] == 1
    assert count(ctx, OutboxMessage) == 0


def test_large_backlogs_go_in_bounded_batches(ctx, clock, settings):
    for _ in range(5):
        queue(ctx, topic="nowhere")
    deliver_due(ctx, settings)  # no routes: settled at once (no_route)
    clock.advance(timedelta(days=91))
    report = purge(ctx, batch_size=2, max_batches=2)
    assert (report.purged["outbox"], report.batches) == (4, 2)
    assert count(ctx, OutboxMessage) == 1
    report = purge(ctx, batch_size=2, max_batches=2)
    assert (report.purged["outbox"], report.batches) == (1, 1)
    assert purges(ctx) == [("outbox", 2), ("outbox", 2), ("outbox", 1)]


def test_ended_sessions_go_after_30_days_and_throttle_rows_after_a_day(ctx, clock,
                                                                       make_person):  # fmt: skip
    make_person("ana")
    enrol_with_link(ctx, "ana", PASSWORD, totp=False)
    rules = SessionRules()  # 12 h lifetime

    def sign_in() -> str:
        return sign_in_with_password(
            ctx, login="ana", password=PASSWORD, code=None, rules=RULES, session_rules=rules
        ).token

    signed_out, expiring = sign_in(), sign_in()
    assert end_session(ctx, signed_out)
    with pytest.raises(SignInFailed):
        sign_in_with_password(
            ctx, login="nobody", password="x" * 12, code=None, rules=RULES, session_rules=rules
        )
    assert (count(ctx, WebSession), count(ctx, SignInThrottle)) == (2, 1)

    clock.advance(DAY)
    assert purge(ctx).purged == {"outbox": 0, "web_sessions": 0, "signin_throttle": 0}
    clock.advance(timedelta(seconds=1))
    assert purge(ctx).purged["signin_throttle"] == 1
    clock.set(T0 + timedelta(days=30, hours=1))
    recent = sign_in()
    assert purge(ctx).purged["web_sessions"] == 1  # the signed-out one
    clock.set(T0 + timedelta(days=30, hours=12, seconds=1))
    assert purge(ctx).purged["web_sessions"] == 1  # the one that expired at 12 h
    assert count(ctx, WebSession) == 1  # the recent one stays
    assert recent != expiring
    assert purges(ctx) == [("signin_throttle", 1), ("web_sessions", 1), ("web_sessions", 1)]


def test_the_audit_ledger_is_never_purged(ctx, clock, settings):
    queue(ctx, topic="nowhere")
    deliver_due(ctx, settings)  # no routes: settled at once (no_route)
    before = count(ctx, AuditInbox)
    clock.advance(timedelta(days=3650))
    assert purge(ctx).purged["outbox"] == 1
    assert count(ctx, AuditInbox) == before + 1  # only the purge's own record was added


def test_the_scheduler_runs_retention(ctx, clock, settings):
    queue(ctx, topic="nowhere")
    clock.advance(timedelta(days=91))
    first = tick(ctx, settings, holder="a")  # delivers (no route: settled at once)
    assert first.failed == {}
    assert first.ran["retention"].purged["outbox"] == 0  # delivered now: kept 90 days
    delivered = [state for _, state in states(ctx)]
    assert delivered  # ours and other jobs' warnings
    assert set(delivered) == {"no_route"}
    clock.advance(timedelta(days=91))
    second = tick(ctx, settings, holder="a")
    assert second.ran["retention"].purged["outbox"] == len(delivered)


@pytest.mark.parametrize(
    "section",
    ["outbox_days: 0", "sessions_days: -1", "outbox_days: 1.5", "keep_forever: true"],
)
def test_retention_values_are_checked(section):
    with pytest.raises(PolicyError, match="retention"):
        parse_policy(example_policy() + f"\nretention:\n  {section}\n")


def test_defaults():
    policy = parse_policy(example_policy()).retention
    assert (policy.outbox_days, policy.sessions_days) == (90, 30)
