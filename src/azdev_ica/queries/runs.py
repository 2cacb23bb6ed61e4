"""Reading runs: one run with its attempts and events, and a filtered, paginated list."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import PipelineEvent, PipelineRun, RunAttempt
from azdev_ica.errors import NotFound, ValidationProblem


@dataclass(frozen=True)
class RunDetail:
    run: PipelineRun
    attempts: list[RunAttempt]
    events: list[PipelineEvent]


def get_run(session: Session, *, run_key: str, principal: Principal) -> RunDetail:
    run = session.scalars(select(PipelineRun).where(PipelineRun.run_key == run_key)).one_or_none()
    if run is None or not principal.can_for(Permission.RUN_READ, run.tenant):
        raise NotFound(f"no run {run_key!r}")
    attempts = list(
        session.scalars(
            select(RunAttempt).where(RunAttempt.run_pk == run.id).order_by(RunAttempt.attempt)
        )
    )
    events = list(
        session.scalars(
            select(PipelineEvent).where(PipelineEvent.run_pk == run.id).order_by(PipelineEvent.id)
        )
    )
    return RunDetail(run=run, attempts=attempts, events=events)


@dataclass(frozen=True)
class RunFilter:
    tenant: str | None = None
    stage: str | None = None
    status: str | None = None
    provider: str | None = None
    pipeline_name: str | None = None
    branch: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None


def list_runs(
    session: Session,
    *,
    principal: Principal,
    filters: RunFilter,
    limit: int,
    cursor: str | None,
) -> tuple[list[PipelineRun], str | None]:
    """Newest first; the cursor is the (start_time, id) of the last row of the page before."""
    query = select(PipelineRun)
    for column, value in (
        (PipelineRun.tenant, filters.tenant),
        (PipelineRun.stage, filters.stage),
        (PipelineRun.status, filters.status),
        (PipelineRun.provider, filters.provider),
        (PipelineRun.pipeline_name, filters.pipeline_name),
        (PipelineRun.branch, filters.branch),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.started_after is not None:
        query = query.where(PipelineRun.start_time >= filters.started_after)
    if filters.started_before is not None:
        query = query.where(PipelineRun.start_time < filters.started_before)
    scope = principal.scope(Permission.RUN_READ)
    if scope is not None:
        query = query.where(PipelineRun.tenant.in_(sorted(scope)))
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                PipelineRun.start_time < at,
                and_(PipelineRun.start_time == at, PipelineRun.id < last_id),
            )
        )
    query = query.order_by(PipelineRun.start_time.desc(), PipelineRun.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].start_time, rows[-1].id)
    return rows, next_cursor


def encode_cursor(at: datetime, row_id: int) -> str:
    raw = json.dumps([at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, row_id = json.loads(raw)
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None or not isinstance(row_id, int) or isinstance(row_id, bool):
            raise ValueError
        if not 0 < row_id < 2**63:  # a BIGINT; a larger one would fail in the database
            raise ValueError
        at = at.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError):
        raise ValidationProblem("the cursor is not valid; start again without one") from None
    return at, row_id
