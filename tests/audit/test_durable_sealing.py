"""SQLite: the sealer's transactions commit with synchronous=FULL (fsynced before they return),
so a power loss cannot leave the database behind a checkpoint already published outside;
ordinary actions keep the cheaper synchronous=NORMAL of WAL mode."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from azdev_ica.jobs.sealer import seal_now
from tests.audit.ledgerdb import start

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _synchronous_of_inserts(ctx: Any, table: str, *, seal: bool = True) -> list[int]:
    """Record an action (and seal it), noting SQLite's `synchronous` level at each INSERT into
    ``table``."""
    seen: list[int] = []

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()}"):
            probe = conn.connection.dbapi_connection.cursor()
            seen.append(probe.execute("PRAGMA synchronous").fetchone()[0])
            probe.close()

    event.listen(ctx.db.engine, "before_cursor_execute", before)
    try:
        start(ctx, len(_RUNS))
        _RUNS.append(1)
        if seal:
            seal_now(ctx)
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", before)
    return seen


_RUNS: list[int] = []  # run numbers used so far (each call records a new run)


def test_sealing_transactions_run_with_synchronous_full(ctx):
    heads = _synchronous_of_inserts(ctx, "azdev_audit_tree")
    checkpoints = _synchronous_of_inserts(ctx, "azdev_audit_checkpoint")
    assert heads
    assert checkpoints
    assert set(heads) == {2}
    assert set(checkpoints) == {2}


def test_actions_keep_synchronous_normal(ctx):
    inbox = _synchronous_of_inserts(ctx, "azdev_audit_inbox", seal=False)
    assert inbox
    assert set(inbox) == {1}
