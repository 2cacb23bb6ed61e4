"""Leases and the scheduler: one process runs a job at a time; time is the injected clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event

from azdev_ica.jobs import lease
from azdev_ica.jobs.scheduler import Job, Scheduler, default_jobs, describe, tick


def test_a_lease_is_held_by_one_holder_until_it_runs_out(ctx, clock):
    assert lease.acquire(ctx, "job:x", "a", 60)
    assert not lease.acquire(ctx, "job:x", "b", 60)
    assert lease.acquire(ctx, "job:x", "a", 60)  # renewing
    clock.advance(timedelta(seconds=59))
    assert not lease.acquire(ctx, "job:x", "b", 60)
    clock.advance(timedelta(seconds=2))
    assert lease.acquire(ctx, "job:x", "b", 60)
    holder = lease.holder_of(ctx, "job:x")
    assert holder is not None
    assert holder[0] == "b"
    lease.release(ctx, "job:x", "a")  # not a's to release: nothing changes
    assert not lease.acquire(ctx, "job:x", "a", 60)
    lease.release(ctx, "job:x", "b")
    assert lease.acquire(ctx, "job:x", "a", 60)


def test_leases_are_taken_together_as_each_alone_would_be(ctx, clock, database):
    assert lease.acquire(ctx, "job:theirs", "b", 60)
    assert lease.acquire(ctx, "job:stale", "b", 10)
    assert lease.acquire(ctx, "job:mine", "a", 60)
    clock.advance(timedelta(seconds=11))  # b's short lease ran out, its long one did not
    names = ["job:theirs", "job:stale", "job:mine", "job:new"]
    assert lease.acquire_all(ctx, names, "a", 60) == {"job:stale", "job:mine", "job:new"}
    assert lease.holder_of(ctx, "job:theirs") == ("b", clock.now() + timedelta(seconds=49))
    for name in ("job:stale", "job:mine", "job:new"):  # renewed from now
        assert lease.holder_of(ctx, name) == ("a", clock.now() + timedelta(seconds=60))
    # Held already: one statement renews them all.
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        assert lease.acquire_all(ctx, names[1:], "a", 60) == set(names[1:])
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    # (SQLite's BEGIN is sent as a statement; psycopg's is not)
    assert [s.split()[0] for s in statements if s != "BEGIN IMMEDIATE"] == ["UPDATE"], statements
    lease.release_all(ctx, names, "a")
    assert lease.acquire_all(ctx, names, "b", 60) == set(names)


def test_a_job_late_in_a_slow_pass_renews_its_lease_first(ctx, clock, settings):
    """Leases are taken at the start of a pass; a job reached after half of its lease (the
    jobs before it were slow) renews its own before it runs, and stands by if it cannot."""
    half = timedelta(seconds=settings.jobs_lease_seconds / 2 + 1)

    def slow(ctx: Any, settings: Any) -> str:
        clock.advance(half)
        return "slow"

    def late(ctx: Any, settings: Any) -> str:
        return "late"

    jobs = [Job("slow", slow), Job("late", late)]
    assert tick(ctx, settings, holder="a", jobs=jobs).ran == {"slow": "slow", "late": "late"}
    holder = lease.holder_of(ctx, "job:late")
    assert holder == ("a", clock.now() + timedelta(seconds=settings.jobs_lease_seconds))

    def slow_then_taken(ctx: Any, settings: Any) -> str:
        # So slow that a's leases ran out, and another process took the late job's.
        clock.advance(timedelta(seconds=settings.jobs_lease_seconds + 1))
        assert lease.acquire(ctx, "job:late", "b", settings.jobs_lease_seconds)
        return "slow"

    result = tick(ctx, settings, holder="a", jobs=[Job("slow", slow_then_taken), jobs[1]])
    assert (result.ran, result.standby) == ({"slow": "slow"}, ["late"])


def test_each_job_runs_in_one_scheduler_and_fails_over(ctx, clock, settings):
    calls: list[str] = []

    def job(ctx: Any, settings: Any) -> int:
        calls.append("ran")
        return len(calls)

    jobs = [Job("probe", job)]
    first = Scheduler(ctx, settings, jobs=jobs, holder="first")
    second = Scheduler(ctx, settings, jobs=jobs, holder="second")
    assert first.tick().ran == {"probe": 1}
    assert second.tick().standby == ["probe"]
    assert calls == ["ran"]
    # The first process stops answering: after its lease the second takes over.
    clock.advance(timedelta(seconds=settings.jobs_lease_seconds + 1))
    assert second.tick().ran == {"probe": 2}
    assert first.tick().standby == ["probe"]
    # A clean stop hands the lease over at once.
    second.stop()
    assert first.tick().ran == {"probe": 3}


def test_a_scheduler_runs_a_slow_job_at_most_every_so_often(ctx, clock, settings):
    """A job with `every` runs at the first tick, then rests until that long has gone by on
    the injected clock; its lease is renewed meanwhile. `tick` alone runs every job."""
    calls: list[str] = []

    def job(name: str) -> Any:
        return lambda ctx, settings: calls.append(name)

    jobs = [Job("often", job("often")), Job("daily", job("daily"), every=60)]
    scheduler = Scheduler(ctx, settings, jobs=jobs, holder="one")
    assert set(scheduler.tick().ran) == {"often", "daily"}
    clock.advance(timedelta(seconds=59))
    result = scheduler.tick()
    assert (set(result.ran), result.resting) == ({"often"}, ["daily"])
    assert lease.holder_of(ctx, "job:daily") == ("one", clock.now() + timedelta(seconds=60))
    clock.advance(timedelta(seconds=1))
    assert set(scheduler.tick().ran) == {"often", "daily"}
    assert calls == ["often", "daily", "often", "often", "daily"]
    assert set(tick(ctx, settings, holder="one", jobs=jobs).ran) == {"often", "daily"}
    # The jobs whose work is due in hours or days are the ones that rest.
    slow = {job.name for job in default_jobs() if job.every}
    assert slow == {"dr-drill-overdue", "monthly-report", "retention"}


def test_a_failing_job_does_not_stop_the_others(ctx, settings):
    def broken(ctx: Any, settings: Any) -> None:
        raise RuntimeError("boom")

    result = tick(
        ctx,
        settings,
        holder="h",
        jobs=[Job("broken", broken), Job("fine", lambda ctx, settings: [1, 2])],
    )
    assert result.failed == {"broken": "RuntimeError: boom"}
    assert describe(result)["ran"] == {"fine": 2}


def test_notifying_jobs_run_before_delivery():
    names = [job.name for job in default_jobs()]
    assert names == [
        "approval-expiry",
        "lock-expiry",
        "override-review",
        "approval-sla",
        "dr-drill-overdue",
        "witness",
        "monthly-report",
        "siem-forward",
        "outbox-delivery",
        "retention",
    ]


def test_a_tick_expires_requests_and_delivers(ctx, clock, settings, ask):
    from sqlalchemy import select

    from azdev_ica.db.tables import Approval, OutboxMessage

    approval_id = ask()
    clock.advance(timedelta(hours=25))
    result = tick(ctx, settings, holder="h")
    assert result.failed == {}
    assert result.ran["approval-expiry"] == [approval_id]
    with ctx.read() as session:
        row = session.get(Approval, approval_id)
        assert row.status == "expired"
        states = set(session.scalars(select(OutboxMessage.state)))
    # No channels configured: every notify row was settled as "no route", none left pending.
    assert states == {"no_route"}


def test_the_app_runs_the_scheduler_and_hands_its_leases_back(settings, database, clock, ctx):
    import time

    from starlette.testclient import TestClient

    from azdev_ica.api.app import create_app

    configured = settings.model_copy(update={"jobs_scheduler": True, "jobs_interval_seconds": 0.05})
    app = create_app(configured, database=database, clock=clock)
    with TestClient(app):
        scheduler = app.state.scheduler
        deadline = time.monotonic() + 30  # waiting for a thread, not for business time
        while scheduler.last is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scheduler.last is not None
        assert "outbox-delivery" in scheduler.last.ran
        held = lease.holder_of(ctx, "job:outbox-delivery")
        assert held is not None
        assert held[0] == scheduler.holder
    # Stopped with the app: another process may take the jobs at once.
    assert lease.acquire(ctx, "job:outbox-delivery", "next-process", 60)
