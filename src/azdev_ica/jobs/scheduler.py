"""The job scheduler: periodic jobs, each run by one server process at a time.

Every `jobs_interval_seconds` the scheduler thread of each server process calls :func:`tick`.
For each job, `tick` takes (or renews) the job's database lease (`jobs/lease.py`, table
`azdev_job_lease`, name `job:<name>`; all of a pass's leases in one statement) and runs the
job only while it holds it; the other processes stand by and take over when the holder's
lease runs out.

The lease saves duplicate work; it is not what makes a due item happen exactly once. Every job
acts on each due item with a conditional write (a claim, a stamp set only while empty), so two
processes that both believe they hold a lease (one paused past its lease, then woken) still
act on an item once. Time is the context's injected clock: tests move it and call `tick`.

Jobs: outbox delivery (`jobs/delivery.py`), the approval SLA (`services/approval_sla.py`),
approval expiry (`services/approvals.expire_due`), deployment-lock lease expiry
(`services/locks.expire_leases`) and the escalation of late override reviews
(`services/overrides.review_due`), and the DR drill-overdue warning
(`services/dr_overdue.warn_overdue_drills`: checked every tick, each tenant warned once per
overdue period), and retention (`services/retention.purge`: delivered and failed outbox rows,
ended web sessions and old sign-in throttle rows, in bounded batches; never the audit ledger),
the monthly compliance report kept on the 1st for the month before
(`services/monthly_reports.keep_previous_month`), and the audit stream to SIEM destinations
(`jobs/siem.py`). Both run before delivery, so their notifications go out in the same tick.

Jobs whose work is measured in hours or days (retention, the drill-overdue warning, the
monthly report) run at most once a minute in a `Scheduler` (`Job.every`), not at every tick:
at rest they were most of an idle tick's cost (13 of 22 ms of CPU on PostgreSQL, 16 of 24
statements). Their leases are renewed at every tick all the same; `tick` called directly
(tests, `ica jobs tick`) runs every job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azdev_ica.jobs import lease
from azdev_ica.services.context import ServiceContext
from azdev_ica.settings import Settings

log = logging.getLogger(__name__)

JobFn = Callable[[ServiceContext, Settings], object]


SLOW_JOB_SECONDS = 60.0
"""How often a `Scheduler` runs the jobs whose work is due in hours or days (`Job.every`)."""


@dataclass(frozen=True)
class Job:
    name: str
    run: JobFn
    every: float = 0.0
    """In a `Scheduler`: at most this often (seconds of the injected clock); 0: every tick."""

    @property
    def lease_name(self) -> str:
        return f"job:{self.name}"


def _deliver(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.jobs.delivery import deliver_due

    return deliver_due(ctx, settings)


def _sla(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.services.approval_sla import run_sla

    return run_sla(ctx)


def _expire_approvals(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.services.approvals import expire_due

    return expire_due(ctx)


def _expire_locks(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.services.locks import expire_leases

    return expire_leases(ctx)


def _review_overrides(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.services.overrides import review_due

    return review_due(ctx)


def _drill_overdue(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.services.dr_overdue import warn_overdue_drills

    return warn_overdue_drills(ctx)


def _retention(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.services.retention import purge

    return purge(ctx)


def _witness(ctx: ServiceContext, settings: Settings) -> object:
    from datetime import timedelta

    from azdev_ica.jobs.witness import WitnessTarget, submit_all

    targets = [WitnessTarget.from_setting(w.url, w.vkey) for w in settings.witnesses]
    return submit_all(
        ctx,
        targets,
        alert_after=timedelta(minutes=settings.witness_alert_minutes),
        timeout=settings.witness_timeout_seconds,
    )


def _siem(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.jobs.siem import forward_all

    return forward_all(ctx, settings)


def _monthly_report(ctx: ServiceContext, settings: Settings) -> object:
    from azdev_ica.services.monthly_reports import keep_previous_month

    return keep_previous_month(ctx)


def default_jobs() -> list[Job]:
    """The jobs of a server process, in the order one tick runs them. Jobs that create
    notifications run before delivery, so one tick also sends what they queued."""
    return [
        Job("approval-expiry", _expire_approvals),
        Job("lock-expiry", _expire_locks),
        Job("override-review", _review_overrides),
        Job("approval-sla", _sla),
        Job("dr-drill-overdue", _drill_overdue, every=SLOW_JOB_SECONDS),
        Job("witness", _witness),
        Job("monthly-report", _monthly_report, every=SLOW_JOB_SECONDS),
        Job("siem-forward", _siem),
        Job("outbox-delivery", _deliver),
        Job("retention", _retention, every=SLOW_JOB_SECONDS),
    ]


@dataclass
class TickResult:
    ran: dict[str, object] = field(default_factory=dict)
    standby: list[str] = field(default_factory=list)  # another process holds the lease
    resting: list[str] = field(default_factory=list)  # held, but ran less than `every` ago
    failed: dict[str, str] = field(default_factory=dict)


def tick(
    ctx: ServiceContext,
    settings: Settings,
    *,
    holder: str,
    jobs: Sequence[Job] | None = None,
    last_run: MutableMapping[str, datetime] | None = None,
) -> TickResult:
    """One pass: run every job whose lease `holder` holds or can take now.

    The leases are taken (or renewed) together at the start of the pass, in one statement. A
    job that starts after half its lease has gone by (earlier jobs of the pass were slow)
    renews its own lease first, so that no job runs on a lease that may have run out.

    With `last_run` (when each job last ran to its end here; updated), a job that ran less
    than its `every` ago rests this pass; without it every held job runs."""
    result = TickResult()
    todo = list(default_jobs() if jobs is None else jobs)
    seconds = settings.jobs_lease_seconds
    try:
        taken_at = ctx.clock.now()
        held = lease.acquire_all(ctx, [job.lease_name for job in todo], holder, seconds)
    except Exception as exc:  # the database is unreachable: every job fails this pass
        for job in todo:
            result.failed[job.name] = f"{type(exc).__name__}: {exc}"
        log.exception("the jobs' leases could not be taken")
        return result
    for job in todo:
        try:
            if job.lease_name not in held:
                result.standby.append(job.name)
                continue
            started = ctx.clock.now()
            ran_at = last_run.get(job.name) if last_run is not None else None
            if ran_at is not None and (started - ran_at).total_seconds() < job.every:
                result.resting.append(job.name)
                continue
            if (ctx.clock.now() - taken_at).total_seconds() > seconds / 2 and not lease.acquire(
                ctx, job.lease_name, holder, seconds
            ):
                result.standby.append(job.name)
                continue
            result.ran[job.name] = job.run(ctx, settings)
            if last_run is not None:
                last_run[job.name] = started
        except Exception as exc:  # one job's failure must not stop the others
            result.failed[job.name] = f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", job.name)
    return result


class Scheduler:
    """The scheduler as a thread of a server process (started and stopped by the app)."""

    def __init__(
        self,
        ctx: ServiceContext,
        settings: Settings,
        *,
        jobs: Sequence[Job] | None = None,
        holder: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.jobs = list(jobs) if jobs is not None else None
        self.holder = holder or lease.default_holder("scheduler")
        self.last: TickResult | None = None
        self._last_run: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> TickResult:
        self.last = tick(
            self.ctx, self.settings, holder=self.holder, jobs=self.jobs, last_run=self._last_run
        )
        return self.last

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._run, name="ica-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        jobs = self.jobs if self.jobs is not None else default_jobs()
        try:  # let another process take over at once instead of after the lease
            lease.release_all(self.ctx, [job.lease_name for job in jobs], self.holder)
        except Exception:  # shutting down: the leases simply run out
            log.debug("could not release the jobs' leases", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a database hiccup must not kill the thread
                log.exception("scheduler tick failed")
            self._stop.wait(self.settings.jobs_interval_seconds)


def describe(result: TickResult) -> dict[str, Any]:
    """A JSON-friendly summary of a tick (for `ica jobs tick`)."""
    return {
        "ran": {name: _summary(value) for name, value in result.ran.items()},
        "standby": result.standby,
        "failed": result.failed,
    }


def _summary(value: object) -> Any:
    if isinstance(value, list | tuple):
        return len(value)
    if hasattr(value, "__dataclass_fields__"):
        out: dict[str, Any] = {}
        for key in value.__dataclass_fields__:
            item = getattr(value, key)
            out[key] = len(item) if isinstance(item, list) else item
        return out
    return value
