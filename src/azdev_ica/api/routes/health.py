"""Liveness and readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from azdev_ica.api.deps import Ctx, public
from azdev_ica.api.schemas import (
    HealthOut,
    LedgerBacklogOut,
    LedgerStallOut,
    LedgerStatusOut,
    Problem,
    ReadyOut,
)
from azdev_ica.db import migrate
from azdev_ica.errors import IcaError, NotReady
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.ledger_status import ledger_status

router = APIRouter(tags=["health"])
Public = Annotated[None, Depends(public())]


@router.get("/health", response_model=HealthOut)
def health(_: Public) -> HealthOut:
    """The process is alive."""
    return HealthOut(status="ok")


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses={503: {"model": Problem, "description": "Not ready; `checks` says why"}},
)
def ready(ctx: Ctx, _: Public) -> ReadyOut:
    """The database answers, its schema is current and a policy is loaded.

    `ledger` says whether the audit ledger seals: a stalled ledger (the sealer refuses, a
    witness refused, or the oldest unsealed record is older than
    ICA_LEDGER_STALL_AFTER_SECONDS) does not make the replica unready, since writes still
    land in the durable inbox; it is reported here with the reason and the backlog."""
    checks: dict[str, str] = {}
    try:
        with ctx.read() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", never a 500
        checks["database"] = f"unreachable: {type(exc).__name__}"
        raise NotReady("the database is unreachable", checks=checks) from None
    checks["migrations"] = (
        "ok" if migrate.is_current(ctx.db.engine) else "behind: run ica db upgrade"
    )
    try:
        with ctx.read() as session:
            checks["policy"] = ctx.policies.active(session).sha256
    except IcaError as exc:
        checks["policy"] = exc.detail
    except SQLAlchemyError as exc:  # a schema too old (or absent) to hold policies
        checks["policy"] = f"unreadable: {type(exc).__name__}"
    if checks["migrations"] != "ok" or "policy" not in checks or len(checks["policy"]) != 64:
        raise NotReady("not ready", checks=checks)
    ledger = _ledger(ctx)
    checks["ledger"] = ledger.state
    return ReadyOut(status="ready", checks=checks, ledger=ledger)


def _ledger(ctx: ServiceContext) -> LedgerStatusOut:
    try:
        status = ledger_status(ctx)
    except SQLAlchemyError as exc:
        return LedgerStatusOut(state="unknown", reason=f"unreadable: {type(exc).__name__}")
    return LedgerStatusOut(
        state="stalled" if status.state == "stalled" else "ok",
        reason=status.reason,
        reasons=[
            LedgerStallOut(source=r.source, reason=r.reason, since=r.since) for r in status.reasons
        ],
        backlog=LedgerBacklogOut(
            count=status.backlog.count,
            oldest_at=status.backlog.oldest_at,
            oldest_age_seconds=status.backlog.oldest_age_seconds,
        ),
    )
