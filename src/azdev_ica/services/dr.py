"""Backups and disaster-recovery drills (seed 000 §9): recorded as append-only evidence.

Each record is one transaction with its audit entry. A failed or out-of-target drill also
queues a notification; so does the scheduler when a tenant's drill is overdue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import BackupRecord, DrDrill
from azdev_ica.domain.dr import RPO_TARGET, RTO_TARGET, DrillRefused, drill_overdue, measure
from azdev_ica.errors import NotFound, OutOfScope, UnknownStage, UnknownTenant, ValidationProblem
from azdev_ica.services.audit import append_audit, rfc3339
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import enqueue


@dataclass(frozen=True)
class RecordBackup:
    tenant: str
    stage: str
    kind: str
    taken_at: datetime
    size_bytes: int
    sha256: str
    encrypted: bool
    location: str


@dataclass(frozen=True)
class RecordDrill:
    backup_id: int
    started_at: datetime
    finished_at: datetime
    succeeded: bool
    stage: str = "dr"
    notes: str | None = None


def _check_target(
    ctx: ServiceContext, session: Session, principal: Principal, tenant: str, stage: str
) -> None:
    if not principal.can_for(Permission.DR_WRITE, tenant):
        raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
    if not principal.can_at(Permission.DR_WRITE, tenant, stage):
        raise OutOfScope(f"stage {stage!r} is outside the caller's scope")
    policy = ctx.policies.active(session)
    if tenant not in policy.tenants:
        raise UnknownTenant(f"tenant {tenant!r} is not in the active policy")
    if policy.stage(stage) is None:
        raise UnknownStage(f"stage {stage!r} is not in the active policy")


def record_backup(
    ctx: ServiceContext, *, principal: Principal, command: RecordBackup
) -> BackupRecord:
    now = ctx.clock.now()
    if command.taken_at > now:
        raise ValidationProblem("a backup cannot be taken in the future")

    def action(session: Session) -> BackupRecord:
        _check_target(ctx, session, principal, command.tenant, command.stage)
        row = BackupRecord(
            tenant=command.tenant,
            stage=command.stage,
            kind=command.kind,
            taken_at=command.taken_at,
            size_bytes=command.size_bytes,
            sha256=command.sha256,
            encrypted=command.encrypted,
            location=command.location,
            recorded_at=now,
            recorded_by=principal.id,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=principal.actor,
            action="backup.record",
            subject_type="backup",
            subject_id=str(row.id),
            tenant=command.tenant,
            data={
                "stage": command.stage,
                "kind": command.kind,
                "taken_at": rfc3339(command.taken_at),
                "size_bytes": command.size_bytes,
                "sha256": command.sha256,
                "encrypted": command.encrypted,
                "location": command.location,
            },
            at=now,
        )
        if not command.encrypted:
            enqueue(
                session,
                topic="backup.unencrypted",
                channel="notify",
                subject_type="backup",
                subject_id=str(row.id),
                tenant=command.tenant,
                payload={
                    "topic": "backup.unencrypted",
                    "tenant": command.tenant,
                    "stage": command.stage,
                    "summary": (
                        f"backup {row.id} of {command.tenant}/{command.stage} is not encrypted"
                    ),
                    "roles": ["tenant_admin", "admin"],
                },
                at=now,
            )
        return row

    return ctx.run_action(action)


def record_drill(ctx: ServiceContext, *, principal: Principal, command: RecordDrill) -> DrDrill:
    now = ctx.clock.now()
    if command.finished_at > now:
        raise ValidationProblem("a drill cannot finish in the future")

    def action(session: Session) -> DrDrill:
        backup = session.get(BackupRecord, command.backup_id)
        if backup is None or not principal.can_at(Permission.DR_WRITE, backup.tenant, backup.stage):
            raise NotFound(f"no backup {command.backup_id}")
        _check_target(ctx, session, principal, backup.tenant, command.stage)
        try:
            measured = measure(
                backup_taken_at=backup.taken_at,
                started_at=command.started_at,
                finished_at=command.finished_at,
                succeeded=command.succeeded,
            )
        except DrillRefused as exc:
            raise ValidationProblem(str(exc)) from None
        row = DrDrill(
            tenant=backup.tenant,
            stage=command.stage,
            backup_id=backup.id,
            started_at=command.started_at,
            finished_at=command.finished_at,
            succeeded=command.succeeded,
            rto_seconds=int(measured.rto.total_seconds()),
            rpo_seconds=int(measured.rpo.total_seconds()),
            rto_target_seconds=int(RTO_TARGET.total_seconds()),
            rpo_target_seconds=int(RPO_TARGET.total_seconds()),
            notes=command.notes,
            recorded_at=now,
            recorded_by=principal.id,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=principal.actor,
            action="dr.drill",
            subject_type="dr_drill",
            subject_id=str(row.id),
            tenant=backup.tenant,
            data={
                "stage": command.stage,
                "backup": backup.id,
                "started_at": rfc3339(command.started_at),
                "finished_at": rfc3339(command.finished_at),
                "succeeded": command.succeeded,
                "rto_seconds": row.rto_seconds,
                "rpo_seconds": row.rpo_seconds,
                "rto_target_seconds": row.rto_target_seconds,
                "rpo_target_seconds": row.rpo_target_seconds,
                "passed": measured.passed,
                "notes": command.notes,
            },
            at=now,
        )
        if not measured.passed:
            enqueue(
                session,
                topic="dr.drill_failed",
                channel="notify",
                subject_type="dr_drill",
                subject_id=str(row.id),
                tenant=backup.tenant,
                payload={
                    "topic": "dr.drill_failed",
                    "tenant": backup.tenant,
                    "stage": command.stage,
                    "summary": (
                        f"DR drill {row.id} of {backup.tenant} missed its targets: "
                        f"RTO {measured.rto}, RPO {measured.rpo}, succeeded={command.succeeded}"
                    ),
                    "roles": ["tenant_admin", "admin", "azdev_escalation"],
                },
                at=now,
            )
        return row

    return ctx.run_action(action)


@dataclass(frozen=True)
class TenantDr:
    tenant: str
    last_backup_at: datetime | None
    last_drill_at: datetime | None
    last_passed_drill_at: datetime | None
    drill_overdue: bool


def dr_status(
    session: Session, *, principal: Principal, tenants: list[str], now: datetime
) -> list[TenantDr]:
    """Per tenant in scope: the newest backup and drill, and whether a drill is overdue."""
    from azdev_ica.services.dr_overdue import tenants_added

    added = tenants_added(session)
    out = []
    for tenant in sorted(tenants):
        if not principal.can_for(Permission.DR_READ, tenant):
            continue
        last_backup = session.scalar(
            select(func.max(BackupRecord.taken_at)).where(BackupRecord.tenant == tenant)
        )
        last_drill = session.scalar(
            select(func.max(DrDrill.finished_at)).where(DrDrill.tenant == tenant)
        )
        passed = [
            drill.finished_at
            for drill in session.scalars(select(DrDrill).where(DrDrill.tenant == tenant))
            if drill.succeeded
            and drill.rto_seconds <= drill.rto_target_seconds
            and drill.rpo_seconds <= drill.rpo_target_seconds
        ]
        last_passed = max(passed) if passed else None
        out.append(
            TenantDr(
                tenant=tenant,
                last_backup_at=last_backup,
                last_drill_at=last_drill,
                last_passed_drill_at=last_passed,
                drill_overdue=drill_overdue(last_passed, now, added.get(tenant)),
            )
        )
    return out
