"""Signatures are append-only evidence: the database refuses to change or remove one, on both
backends (the shared refusal walk in tests/db covers the ledger tables the same way)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from azdev_ica.domain.approvals import Decision
from azdev_ica.services.approvals import RequestApproval, request_approval, sign_approval
from tests.approvals.conftest import PIPELINE, RUN_KEY

TABLE = "azdev_approval_signature"
COLUMNS = "id, approval_id, person_id, half, role, decision, comment, signed_at"


@pytest.fixture
def signed(ctx: Any, run_key: str, people: Any) -> list[tuple[Any, ...]]:
    approval = request_approval(ctx, principal=PIPELINE, command=RequestApproval(run_key=RUN_KEY))
    sign_approval(
        ctx,
        principal=people["alice"].principal(ctx),
        approval_id=approval.approval.id,
        decision=Decision.APPROVE,
    )
    return rows(ctx)


def rows(ctx: Any) -> list[tuple[Any, ...]]:
    with ctx.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY id"))]  # noqa: S608


def run(ctx: Any, statements: tuple[str, ...]) -> None:
    with ctx.db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def refused(ctx: Any, *statements: str) -> str:
    with pytest.raises(DBAPIError) as caught:
        run(ctx, statements)
    return str(caught.value.orig)


COPY = (
    f"INSERT INTO {TABLE} ({COLUMNS}) SELECT id, approval_id, person_id, half, role, "  # noqa: S608
    f"'reject', comment, signed_at FROM {TABLE} WHERE 1 = 1"  # WHERE: SQLite's upsert needs it
)


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {TABLE} SET decision = 'reject'",  # noqa: S608
        f"UPDATE {TABLE} SET person_id = person_id",  # noqa: S608
        f"DELETE FROM {TABLE}",  # noqa: S608
        f"{COPY} ON CONFLICT (id) DO UPDATE SET decision = excluded.decision",
        f"{COPY} ON CONFLICT (approval_id, half) DO UPDATE SET decision = excluded.decision",
    ],
)
def test_a_signature_cannot_be_changed_or_removed(ctx, signed, statement):
    assert "append-only" in refused(ctx, statement)
    assert rows(ctx) == signed


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_insert_or_replace_is_refused_on_sqlite(ctx, signed):
    for verb in ("INSERT OR REPLACE", "REPLACE"):
        assert "append-only" in refused(ctx, COPY.replace("INSERT", verb, 1))
    assert rows(ctx) == signed


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_truncate_and_replica_mode_are_refused_on_postgresql(ctx, signed):
    assert "append-only" in refused(ctx, f"TRUNCATE {TABLE} CASCADE")
    replica = "SET LOCAL session_replication_role = replica"
    assert "append-only" in refused(ctx, replica, f"DELETE FROM {TABLE}")  # noqa: S608
    assert rows(ctx) == signed
