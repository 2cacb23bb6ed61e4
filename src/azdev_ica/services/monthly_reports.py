"""The kept monthly compliance reports: on the first of each month (UTC) the scheduler's
`monthly-report` job builds the report of the month before (`queries/report.py`, every tenant
and the fleet), keeps its JSON and its HTML (`azdev_monthly_report`, one row per month), and
tells the configured recipients (a `report.monthly` notification, routed by `ICA_NOTIFY`,
with a link to the kept report), in one transaction with its audit entry.

Once per month: the month is the row's primary key, so a second process that built the same
report at the same time loses at the INSERT and changes nothing. A server that was down on
the 1st keeps the report at its first tick afterwards (only the month just ended is made;
earlier months stay on demand: `ica report monthly`, `GET /report/monthly`).

The kept report covers every tenant, so only a reader whose `audit:read` reaches all tenants
lists or reads it (`can_for(AUDIT_READ, None)`); to anyone else a kept report is absent, and
the on-demand report gives them their own tenants.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import MonthlyReportRecord
from azdev_ica.errors import NoPolicy, NotFound
from azdev_ica.queries.report import monthly_report, render_html
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import NOTIFY_CHANNEL, enqueue

__all__ = [
    "REPORT_ACTOR",
    "TOPIC_MONTHLY",
    "KeptReport",
    "get_kept_report",
    "keep_monthly_report",
    "keep_previous_month",
    "list_kept_reports",
    "previous_month",
]

REPORT_ACTOR = Actor(kind="system", id="reports.monthly")
TOPIC_MONTHLY = "report.monthly"
_ROLES = ["azdev_auditor", "admin"]
_READER = Principal.with_role(
    kind="system", id="reports.monthly", name="monthly report", role=Role.AUDITOR, tenants=None
)


@dataclass(frozen=True)
class KeptReport:
    """A kept report's listing: its month, when it was built, its size and hash."""

    month: str
    generated_at: datetime
    sha256: str
    json_bytes: int
    html_bytes: int


def previous_month(now: datetime) -> str:
    """The UTC calendar month before the one `now` falls in, as YYYY-MM."""
    year, month = now.year, now.month - 1
    if month == 0:
        year, month = year - 1, 12
    return f"{year:04d}-{month:02d}"


def _summary(report: dict[str, Any]) -> str:
    fleet = report.get("fleet") or {}
    runs = fleet.get("runs", {})
    deployments = fleet.get("deployments", {})
    approvals = fleet.get("approvals", {})
    return (
        f"Monthly compliance report {report['month']} kept: {runs.get('finished', 0)} runs "
        f"finished, {deployments.get('production', 0)} production deployments, "
        f"{approvals.get('decided', 0)} approvals decided, "
        f"{fleet.get('unauthorised_changes', 0)} unauthorised changes"
    )


def keep_monthly_report(ctx: ServiceContext, *, month: str) -> bool:
    """Build and keep the report of `month` unless it is kept already; True when kept now."""
    with ctx.read() as session:
        if session.get(MonthlyReportRecord, month) is not None:
            return False
    now = ctx.clock.now()
    try:
        with ctx.db.write() as session:
            report = monthly_report(ctx, session, principal=_READER, month=month)
            json_text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
            html_text = render_html(report)
            digest = hashlib.sha256(json_text.encode("utf-8")).hexdigest()
            session.execute(
                insert(MonthlyReportRecord).values(
                    month=month,
                    generated_at=now,
                    json_text=json_text,
                    html_text=html_text,
                    sha256=digest,
                )
            )
            append_audit(
                session,
                actor=REPORT_ACTOR,
                action="report.monthly_kept",
                subject_type="report",
                subject_id=month,
                tenant=None,
                data={"month": month, "json_sha256": digest, "tenants": sorted(report["tenants"])},
                at=now,
            )
            enqueue(
                session,
                topic=TOPIC_MONTHLY,
                channel=NOTIFY_CHANNEL,
                subject_type="report",
                subject_id=month,
                tenant=None,
                payload={
                    "topic": TOPIC_MONTHLY,
                    "severity": "info",
                    "tenant": None,
                    "month": month,
                    "summary": _summary(report),
                    "roles": _ROLES,
                    "link": f"{ctx.public_url.rstrip('/')}/reports/{month}",
                    "json_sha256": digest,
                },
                at=now,
            )
    except IntegrityError:  # another process kept it first
        return False
    return True


def keep_previous_month(ctx: ServiceContext) -> str | None:
    """The scheduler's job: keep the report of the month before now's (UTC) once; the month
    kept by this call, or None."""
    month = previous_month(ctx.clock.now())
    try:
        return month if keep_monthly_report(ctx, month=month) else None
    except NoPolicy:  # nothing to report on before a policy exists
        return None


def _may_read(principal: Principal) -> bool:
    return principal.can_for(Permission.AUDIT_READ, None)


def list_kept_reports(session: Session, *, principal: Principal) -> list[KeptReport]:
    """The kept reports, newest month first (none for a reader of only some tenants)."""
    if not _may_read(principal):
        return []
    rows = session.execute(
        select(
            MonthlyReportRecord.month,
            MonthlyReportRecord.generated_at,
            MonthlyReportRecord.sha256,
            MonthlyReportRecord.json_text,
            MonthlyReportRecord.html_text,
        ).order_by(MonthlyReportRecord.month.desc())
    )
    return [
        KeptReport(
            month=row.month,
            generated_at=row.generated_at,
            sha256=row.sha256,
            json_bytes=len(row.json_text.encode("utf-8")),
            html_bytes=len(row.html_text.encode("utf-8")),
        )
        for row in rows
    ]


def get_kept_report(session: Session, *, principal: Principal, month: str) -> MonthlyReportRecord:
    """A kept report; NotFound when absent or when the reader does not reach every tenant."""
    row = session.get(MonthlyReportRecord, month) if _may_read(principal) else None
    if row is None:
        raise NotFound(f"no kept monthly report for {month}")
    return row
