"""Reads the console's list pages need that the API answers in other shapes: the overrides
of the caller's tenants, the ledger's checkpoints with their cosignatures, recent DR drills.
Scoped like the API: a tenant outside the caller's permission is left out."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import (
    AuditCheckpoint,
    AuditShard,
    DrDrill,
    Override,
    WitnessCosignature,
)


def list_overrides(
    session: Session,
    *,
    principal: Principal,
    tenant: str | None,
    status: str | None,
    after: int | None,
    limit: int,
) -> tuple[list[Override], int | None]:
    """Overrides newest first, in the caller's tenants (as `GET /override/{id}` scopes one,
    `services.overrides.get_override`); the cursor is the last id of the page."""
    query = select(Override).order_by(Override.id.desc()).limit(limit + 1)
    scope = principal.tenants
    if scope is not None:
        query = query.where(Override.tenant.in_(sorted(scope)))
    if tenant is not None:
        query = query.where(Override.tenant == tenant)
    if status is not None:
        query = query.where(Override.status == status)
    if after is not None:
        query = query.where(Override.id < after)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


@dataclass(frozen=True)
class CheckpointView:
    checkpoint: AuditCheckpoint
    cosignatures: list[WitnessCosignature]


def audit_years(session: Session) -> list[int]:
    """The ledger's yearly shards, newest first."""
    return list(session.scalars(select(AuditShard.year).order_by(AuditShard.year.desc())))


def recent_checkpoints(session: Session, *, year: int, limit: int) -> list[CheckpointView]:
    """The newest signed checkpoints of `year` with the witnesses' cosignatures of each."""
    rows = list(
        session.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.year == year)
            .order_by(AuditCheckpoint.size.desc())
            .limit(limit)
        )
    )
    sizes = [row.size for row in rows]
    by_size: dict[int, list[WitnessCosignature]] = {size: [] for size in sizes}
    if sizes:
        for cosignature in session.scalars(
            select(WitnessCosignature)
            .where(WitnessCosignature.year == year, WitnessCosignature.size.in_(sizes))
            .order_by(WitnessCosignature.witness)
        ):
            by_size[cosignature.size].append(cosignature)
    return [CheckpointView(row, by_size[row.size]) for row in rows]


def recent_drills(session: Session, *, principal: Principal, limit: int) -> list[DrDrill]:
    """The newest DR drills of the tenants the caller may read DR records of."""
    query = select(DrDrill).order_by(DrDrill.started_at.desc(), DrDrill.id.desc()).limit(limit)
    scope = principal.scope(Permission.DR_READ)
    if scope is not None:
        query = query.where(DrDrill.tenant.in_(sorted(scope)))
    return list(session.scalars(query))
