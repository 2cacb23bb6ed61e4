"""The monthly compliance report (seed 000 §4.1 "Monthly compliance report"), per tenant and
fleet-wide, built from the metrics queries and the ledger. Read-only.

JSON schema `ica-monthly-compliance` version 1 (documented in docs/report.md; fields are only
ever added, never renamed, within a version):

    {"report": "ica-monthly-compliance", "schema_version": 1, "month": "2026-10",
     "period": {"start", "end"}, "generated_at", "tenant": null | code,
     "definitions": {metric: version},
     "fleet": SECTION | null (null when one tenant was asked for),
     "tenants": {code: SECTION},
     "policy": {"active_sha256", "versions_activated": [{"id", "sha256", "applied_at",
                "applied_by", "via": "proposal" | "break_glass" | "direct", "proposal_id",
                "signers"}]},
     "ledger": {"origin", "entries_in_month", "size_at_month_end", "checkpoint_at_month_end":
                CHECKPOINT | null, "covering_checkpoint": CHECKPOINT | null}}

    SECTION: {"runs": {"finished", "succeeded", "failed", "success_rate"},
              "deployments": {"production", "succeeded", "failed_changes",
                              "change_failure_rate", "per_day"},
              "mttr_seconds",
              "approvals": {"decided", "within_sla", "sla_compliance"},
              "overrides": {"signed_in_month", "quarter", "quarter_to_date", "target",
                            "within_target"},
              "unauthorised_changes",
              "incidents": {"opened", "resolved", "open_at_month_end"},
              "dr": {"backups", "backups_unencrypted", "drills", "drills_passed",
                     "last_passed_drill_at", "drill_overdue_at_month_end"}}
    CHECKPOINT: {"size", "root" (base64), "signed_at"}

Rates are fractions (0..1) or null when there was nothing to measure; times RFC 3339 UTC.
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import (
    AuditCheckpoint,
    AuditEntry,
    AuditInbox,
    BackupRecord,
    DrDrill,
    Incident,
    PolicyProposal,
    PolicySignature,
    PolicyVersion,
    UnauthorisedChange,
)
from azdev_ica.domain.dr import drill_overdue
from azdev_ica.domain.metrics import DEFINITIONS, Metrics, Period, compute
from azdev_ica.errors import OutOfScope, UnknownTenant, ValidationProblem
from azdev_ica.queries.metrics import DeliveryFacts, delivery_facts, override_target
from azdev_ica.services.audit import rfc3339
from azdev_ica.services.context import ServiceContext

SCHEMA = "ica-monthly-compliance"
SCHEMA_VERSION = 1
_MONTH = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")
PRODUCTION = "production"


def month_period(month: str) -> Period:
    """`2026-10` -> [2026-10-01, 2026-11-01) UTC; a ValidationProblem otherwise."""
    match = _MONTH.match(month)
    # The period ends on the first of the next month, so December 9999 has no end to give.
    if match is None or not 2000 <= int(match.group(1)) <= 9998:
        raise ValidationProblem(f"not a month (YYYY-MM, 2000-01 to 9998-12): {month!r}")
    year, number = int(match.group(1)), int(match.group(2))
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    return Period(start, end)


def _t(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def monthly_report(
    ctx: ServiceContext,
    session: Session,
    *,
    principal: Principal,
    month: str,
    tenant: str | None = None,
) -> dict[str, Any]:
    """The report of `month` for every tenant the caller may audit, or for one."""
    period = month_period(month)
    policy = ctx.policies.active(session)
    scope = principal.scope(Permission.AUDIT_READ)
    if tenant is not None:
        if tenant not in policy.tenants:
            raise UnknownTenant(f"tenant {tenant!r} is not in the active policy")
        if scope is not None and tenant not in scope:
            raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
        tenants = [tenant]
    else:
        tenants = [code for code in policy.tenants if scope is None or code in scope]
    facts = delivery_facts(session, principal=principal, period=period, tenant=tenant)
    target = override_target(ctx, session)
    sections = {
        code: _section(session, period, facts, code, [code], target) for code in sorted(tenants)
    }
    fleet = None if tenant is not None else _section(session, period, facts, None, tenants, target)
    return {
        "report": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "month": month,
        "period": {"start": rfc3339(period.start), "end": rfc3339(period.end)},
        "generated_at": rfc3339(ctx.clock.now()),
        "tenant": tenant,
        "definitions": dict(sorted(DEFINITIONS.items())),
        "fleet": fleet,
        "tenants": sections,
        "policy": {
            "active_sha256": policy.sha256,
            "versions_activated": _versions(session, period),
        },
        "ledger": _ledger(ctx, session, period),
    }


def _section(
    session: Session,
    period: Period,
    facts: DeliveryFacts,
    tenant: str | None,
    tenants: list[str],
    target: int | None,
) -> dict[str, Any]:
    """One tenant's section (`tenant`), or the fleet's (None: every tenant in `tenants`)."""
    metrics: Metrics = compute(
        period,
        runs=[r for r in facts.runs if tenant is not None or r.tenant in tenants],
        deployments=[d for d in facts.deployments if d.tenant in tenants],
        incidents=[i for i in facts.incidents if i.tenant in tenants],
        approvals=[a for a in facts.approvals if a.tenant in tenants],
        overrides=[o for o in facts.overrides if o.tenant in tenants],
        tenant=tenant,
        production_stage=PRODUCTION,
    )
    finished = [
        r
        for r in facts.runs
        if r.tenant in tenants
        and r.finished_at is not None
        and r.finished_at in period
        and r.status in {"success", "failed"}
    ]
    production = [
        d
        for d in facts.deployments
        if d.tenant in tenants and d.stage == PRODUCTION and d.finished_at in period
    ]
    decided = [
        a
        for a in facts.approvals
        if a.tenant in tenants and a.decided_at is not None and a.decided_at in period
    ]
    within_sla = sum(
        1 for a in decided if a.decided_at is not None and a.decided_at - a.requested_at <= a.sla
    )
    signed = [o for o in facts.overrides if o.tenant in tenants and o.signed_at in period]
    quarter, to_date = metrics.overrides_per_quarter[-1]
    return {
        "runs": {
            "finished": len(finished),
            "succeeded": sum(1 for r in finished if r.status == "success"),
            "failed": sum(1 for r in finished if r.status == "failed"),
            "success_rate": metrics.pipeline_success_rate,
        },
        "deployments": {
            "production": len(production),
            "succeeded": sum(1 for d in production if d.succeeded),
            "failed_changes": sum(1 for d in production if d.failed_change),
            "change_failure_rate": metrics.change_failure_rate,
            "per_day": metrics.deployment_frequency_per_day,
        },
        "mttr_seconds": None if metrics.mttr is None else metrics.mttr.total_seconds(),
        "approvals": {
            "decided": len(decided),
            "within_sla": within_sla,
            "sla_compliance": metrics.approval_sla_compliance,
        },
        "overrides": {
            "signed_in_month": len(signed),
            "quarter": quarter,
            "quarter_to_date": to_date,
            "target": target,
            "within_target": None if target is None else to_date <= target,
        },
        "unauthorised_changes": _count(
            session,
            select(func.count())
            .select_from(UnauthorisedChange)
            .where(
                UnauthorisedChange.tenant.in_(tenants),
                UnauthorisedChange.detected_at >= period.start,
                UnauthorisedChange.detected_at < period.end,
            ),
        ),
        "incidents": _incidents(session, period, tenants),
        "dr": _dr(session, period, tenants),
    }


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(query) or 0)


def _incidents(session: Session, period: Period, tenants: list[str]) -> dict[str, int]:
    mine = Incident.tenant.in_(tenants)
    return {
        "opened": _count(
            session,
            select(func.count())
            .select_from(Incident)
            .where(mine, Incident.opened_at >= period.start, Incident.opened_at < period.end),
        ),
        "resolved": _count(
            session,
            select(func.count())
            .select_from(Incident)
            .where(mine, Incident.resolved_at >= period.start, Incident.resolved_at < period.end),
        ),
        "open_at_month_end": _count(
            session,
            select(func.count())
            .select_from(Incident)
            .where(
                mine,
                Incident.opened_at < period.end,
                (Incident.resolved_at.is_(None)) | (Incident.resolved_at >= period.end),
            ),
        ),
    }


def _dr(session: Session, period: Period, tenants: list[str]) -> dict[str, Any]:
    backups = list(
        session.scalars(
            select(BackupRecord).where(
                BackupRecord.tenant.in_(tenants),
                BackupRecord.taken_at >= period.start,
                BackupRecord.taken_at < period.end,
            )
        )
    )
    drills = list(
        session.scalars(
            select(DrDrill).where(DrDrill.tenant.in_(tenants), DrDrill.finished_at < period.end)
        )
    )

    def passed(drill: DrDrill) -> bool:
        return (
            drill.succeeded
            and drill.rto_seconds <= drill.rto_target_seconds
            and drill.rpo_seconds <= drill.rpo_target_seconds
        )

    in_month = [d for d in drills if d.finished_at >= period.start]
    last_passed: dict[str, datetime] = {}
    for drill in drills:
        seen = last_passed.get(drill.tenant)
        if passed(drill) and (seen is None or drill.finished_at > seen):
            last_passed[drill.tenant] = drill.finished_at
    # Fleet: the oldest of the tenants' last passed drills (the one most likely overdue).
    newest = [last_passed.get(code) for code in tenants]
    known = [value for value in newest if value is not None]
    last = min(known) if known and len(known) == len(newest) else None
    overdue = any(drill_overdue(value, period.end) for value in newest)
    return {
        "backups": len(backups),
        "backups_unencrypted": sum(1 for b in backups if not b.encrypted),
        "drills": len(in_month),
        "drills_passed": sum(1 for d in in_month if passed(d)),
        "last_passed_drill_at": _t(last),
        "drill_overdue_at_month_end": overdue,
    }


def _versions(session: Session, period: Period) -> list[dict[str, Any]]:
    rows = list(
        session.scalars(
            select(PolicyVersion)
            .where(PolicyVersion.applied_at >= period.start, PolicyVersion.applied_at < period.end)
            .order_by(PolicyVersion.id)
        )
    )
    out = []
    for row in rows:
        proposal = session.scalars(
            select(PolicyProposal).where(PolicyProposal.version_id == row.id)
        ).first()
        if proposal is not None:
            signers = sorted(
                session.scalars(
                    select(PolicySignature.person_id).where(
                        PolicySignature.proposal_id == proposal.id,
                        PolicySignature.decision == "approve",
                    )
                )
            )
            via, proposal_id = "proposal", proposal.id
        else:
            signers, proposal_id = [], None
            via = "break_glass" if _break_glass(session, row) else "direct"
        out.append(
            {
                "id": row.id,
                "sha256": row.sha256,
                "applied_at": rfc3339(row.applied_at),
                "applied_by": row.applied_by,
                "via": via,
                "proposal_id": proposal_id,
                "signers": signers,
            }
        )
    return out


def _break_glass(session: Session, row: PolicyVersion) -> bool:
    """Whether the direct apply of `row` was a break-glass one (its audit entry says so)."""
    for body in session.scalars(
        select(AuditInbox.body).where(
            AuditInbox.action == "policy.apply", AuditInbox.subject_id == row.sha256
        )
    ):
        data = json.loads(bytes(body)).get("data", {})
        if data.get("version_id") == row.id:
            return bool(data.get("break_glass"))
    return False


def _checkpoint(row: AuditCheckpoint | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "size": row.size,
        "root": base64.b64encode(bytes(row.root)).decode(),
        "signed_at": rfc3339(row.signed_at),
    }


def _ledger(ctx: ServiceContext, session: Session, period: Period) -> dict[str, Any]:
    """The month's entries in the yearly shard, and the checkpoints an auditor verifies them
    with: the newest signed by the month's end, and the first that covers every entry of the
    month (its size reaches the month's last entry)."""
    year = period.start.year
    in_year = AuditEntry.year == year
    entries = _count(
        session,
        select(func.count())
        .select_from(AuditEntry)
        .where(in_year, AuditEntry.time >= period.start, AuditEntry.time < period.end),
    )
    last_idx = session.scalar(
        select(func.max(AuditEntry.idx)).where(in_year, AuditEntry.time < period.end)
    )
    size = 0 if last_idx is None else int(last_idx) + 1
    by_end = session.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.year == year, AuditCheckpoint.signed_at < period.end)
        .order_by(AuditCheckpoint.size.desc())
        .limit(1)
    ).first()
    covering = (
        session.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.year == year, AuditCheckpoint.size >= size)
            .order_by(AuditCheckpoint.size)
            .limit(1)
        ).first()
        if size
        else None
    )
    return {
        "origin": ctx.ledger.origin(year),
        "entries_in_month": entries,
        "size_at_month_end": size,
        "checkpoint_at_month_end": _checkpoint(by_end),
        "covering_checkpoint": _checkpoint(covering),
    }


# --- HTML --------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        text = "–"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    else:
        text = str(value)
    return html.escape(text)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _hours(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 3600:.1f} h"


_ROWS: list[tuple[str, Any]] = [
    ("Runs finished", lambda s: _cell(s["runs"]["finished"])),
    ("Pipeline success rate", lambda s: _percent(s["runs"]["success_rate"])),
    ("Production deployments", lambda s: _cell(s["deployments"]["production"])),
    ("Change failure rate", lambda s: _percent(s["deployments"]["change_failure_rate"])),
    ("MTTR", lambda s: _hours(s["mttr_seconds"])),
    ("Approvals decided", lambda s: _cell(s["approvals"]["decided"])),
    ("Approval SLA compliance", lambda s: _percent(s["approvals"]["sla_compliance"])),
    ("Overrides signed (month)", lambda s: _cell(s["overrides"]["signed_in_month"])),
    (
        "Overrides quarter to date / target",
        lambda s: (
            _cell(f"{s['overrides']['quarter_to_date']} / {s['overrides']['target']}")
            + ("" if s["overrides"]["within_target"] is not False else " ⚠")
        ),
    ),
    ("Unauthorised changes", lambda s: _cell(s["unauthorised_changes"])),
    ("Incidents opened", lambda s: _cell(s["incidents"]["opened"])),
    ("Incidents resolved", lambda s: _cell(s["incidents"]["resolved"])),
    ("Incidents open at month end", lambda s: _cell(s["incidents"]["open_at_month_end"])),
    (
        "Backups (unencrypted)",
        lambda s: _cell(f"{s['dr']['backups']} ({s['dr']['backups_unencrypted']})"),
    ),
    ("DR drills (passed)", lambda s: _cell(f"{s['dr']['drills']} ({s['dr']['drills_passed']})")),
    ("Drill overdue at month end", lambda s: _cell(s["dr"]["drill_overdue_at_month_end"])),
]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#111}
table{border-collapse:collapse;margin:1rem 0}
th,td{border:1px solid #bbb;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
code{font-size:.85em;word-break:break-all}
"""


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page: no scripts, no external resources, every
    value escaped."""
    columns: list[tuple[str, dict[str, Any]]] = []
    if report["fleet"] is not None:
        columns.append(("Fleet", report["fleet"]))
    columns += [(code, section) for code, section in report["tenants"].items()]
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in columns)
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{render(section)}</td>" for _, section in columns)
        + "</tr>"
        for label, render in _ROWS
    )
    versions = report["policy"]["versions_activated"]
    version_rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{_cell(value)}</td>"
            for value in (
                v["id"],
                v["sha256"][:12],
                v["applied_at"],
                v["applied_by"],
                v["via"],
                ", ".join(str(s) for s in v["signers"]) or None,
            )
        )
        + "</tr>"
        for v in versions
    )
    ledger = report["ledger"]
    checkpoint = ledger["covering_checkpoint"] or ledger["checkpoint_at_month_end"]
    month = html.escape(report["month"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>ICA monthly compliance report {month}</title><style>{_STYLE}</style></head>"
        f"<body><h1>Monthly compliance report {month}</h1>"
        f"<p>Period {_cell(report['period']['start'])} to {_cell(report['period']['end'])} "
        f"(UTC); generated {_cell(report['generated_at'])}; schema "
        f"{_cell(report['report'])} v{_cell(report['schema_version'])}.</p>"
        f"<h2>Delivery, approvals, overrides, incidents, DR</h2>"
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>Policy</h2><p>Active policy <code>{_cell(report['policy']['active_sha256'])}</code>."
        f" Versions activated in the month: {len(versions)}.</p>"
        + (
            "<table><thead><tr><th>Version</th><th>SHA-256</th><th>Applied at</th>"
            f"<th>Applied by</th><th>Via</th><th>Signers</th></tr></thead><tbody>{version_rows}"
            "</tbody></table>"
            if versions
            else ""
        )
        + f"<h2>Audit ledger</h2><p>Shard <code>{_cell(ledger['origin'])}</code>: "
        f"{_cell(ledger['entries_in_month'])} entries in the month; tree size at month end "
        f"{_cell(ledger['size_at_month_end'])}.</p>"
        + (
            f"<p>Checkpoint: size {_cell(checkpoint['size'])}, root "
            f"<code>{_cell(checkpoint['root'])}</code>, signed {_cell(checkpoint['signed_at'])}."
            "</p>"
            if checkpoint
            else "<p>No signed checkpoint covers the month yet.</p>"
        )
        + "<p>Metric definitions: "
        + ", ".join(f"{_cell(k)} v{_cell(v)}" for k, v in report["definitions"].items())
        + ".</p></body></html>\n"
    )
