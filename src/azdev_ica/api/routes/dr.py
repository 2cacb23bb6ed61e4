"""Backups and disaster-recovery drills (seed 000 §9): evidence in, status out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, StrictBool

from azdev_ica.api.deps import Ctx, json_body, require
from azdev_ica.api.schemas import Code, Instant, JsonInt, Name, ShortText, Strict
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import BackupRecord, DrDrill
from azdev_ica.services.audit import rfc3339
from azdev_ica.services.dr import RecordBackup, RecordDrill, dr_status, record_backup, record_drill

router = APIRouter(tags=["disaster recovery"])

Writer = Annotated[Principal, Depends(require(Permission.DR_WRITE))]
Reader = Annotated[Principal, Depends(require(Permission.DR_READ))]


class BackupRequest(Strict):
    tenant: Code
    stage: Code
    kind: Code = Field(description="What was backed up: database, filestore, audit, ...")
    taken_at: Instant
    size_bytes: JsonInt = Field(ge=0, le=2**62)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Checksum of the backup file")
    encrypted: StrictBool
    location: Name = Field(description="Where it is kept, e.g. a blob URL without its SAS")


class BackupOut(BaseModel):
    id: int
    tenant: str
    stage: str
    kind: str
    taken_at: str
    size_bytes: int
    sha256: str
    encrypted: bool
    location: str


class DrillRequest(Strict):
    backup_id: JsonInt = Field(ge=1, le=2**53, description="The backup the drill restored")
    stage: Code = "dr"
    started_at: Instant
    finished_at: Instant
    succeeded: StrictBool
    notes: ShortText | None = None


class DrillOut(BaseModel):
    id: int
    tenant: str
    stage: str
    backup_id: int
    started_at: str
    finished_at: str
    succeeded: bool
    rto_seconds: int
    rpo_seconds: int
    rto_target_seconds: int
    rpo_target_seconds: int
    passed: bool


class TenantDrOut(BaseModel):
    tenant: str
    last_backup_at: str | None
    last_drill_at: str | None
    last_passed_drill_at: str | None
    drill_overdue: bool = Field(description="No passed drill within the last quarter")


def _backup_out(row: BackupRecord) -> BackupOut:
    return BackupOut(
        id=row.id,
        tenant=row.tenant,
        stage=row.stage,
        kind=row.kind,
        taken_at=rfc3339(row.taken_at),
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        encrypted=row.encrypted,
        location=row.location,
    )


def _drill_out(row: DrDrill) -> DrillOut:
    return DrillOut(
        id=row.id,
        tenant=row.tenant,
        stage=row.stage,
        backup_id=row.backup_id,
        started_at=rfc3339(row.started_at),
        finished_at=rfc3339(row.finished_at),
        succeeded=row.succeeded,
        rto_seconds=row.rto_seconds,
        rpo_seconds=row.rpo_seconds,
        rto_target_seconds=row.rto_target_seconds,
        rpo_target_seconds=row.rpo_target_seconds,
        passed=row.succeeded
        and row.rto_seconds <= row.rto_target_seconds
        and row.rpo_seconds <= row.rpo_target_seconds,
    )


@router.post(
    "/dr/backup",
    status_code=201,
    response_model=BackupOut,
    dependencies=[Depends(json_body)],
    summary="Record a backup (append-only evidence; an unencrypted one alerts)",
)
def dr_backup(ctx: Ctx, principal: Writer, body: BackupRequest) -> BackupOut:
    row = record_backup(ctx, principal=principal, command=RecordBackup(**body.model_dump()))
    return _backup_out(row)


@router.post(
    "/dr/drill",
    status_code=201,
    response_model=DrillOut,
    dependencies=[Depends(json_body)],
    summary="Record a restore drill: RTO and RPO measured against the targets (4 h, 1 h)",
)
def dr_drill(ctx: Ctx, principal: Writer, body: DrillRequest) -> DrillOut:
    row = record_drill(ctx, principal=principal, command=RecordDrill(**body.model_dump()))
    return _drill_out(row)


@router.get(
    "/dr/status",
    response_model=list[TenantDrOut],
    summary="Per tenant: newest backup and drill, and whether a drill is overdue",
)
def dr_status_route(
    ctx: Ctx, principal: Reader, tenant: Annotated[Code | None, Query()] = None
) -> list[TenantDrOut]:
    with ctx.read() as session:
        tenants = list(ctx.policies.active(session).tenants)
        if tenant is not None:
            tenants = [code for code in tenants if code == tenant]
        rows = dr_status(session, principal=principal, tenants=tenants, now=ctx.clock.now())
    return [
        TenantDrOut(
            tenant=row.tenant,
            last_backup_at=rfc3339(row.last_backup_at) if row.last_backup_at else None,
            last_drill_at=rfc3339(row.last_drill_at) if row.last_drill_at else None,
            last_passed_drill_at=(
                rfc3339(row.last_passed_drill_at) if row.last_passed_drill_at else None
            ),
            drill_overdue=row.drill_overdue,
        )
        for row in rows
    ]
