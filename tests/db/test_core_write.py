"""`Database.run_core`: a write transaction of Core statements, straight through the driver on
PostgreSQL. It must write and read exactly what SQLAlchemy does, commit once, roll back on
error, fall back to SQLAlchemy's own path (its errors, its retries) whenever the driver fails,
and never claim that nothing changed when the connection is lost during the COMMIT."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    bindparam,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.pool import NullPool

from azdev_ica.db.engine import CoreTransaction
from azdev_ica.db.tables import IdempotencyRecord
from azdev_ica.errors import CommitOutcomeUnknown

POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

_RECORDS = cast(Table, IdempotencyRecord.__table__)
_INSERT = insert(_RECORDS).returning(_RECORDS.c.id, _RECORDS.c.response, _RECORDS.c.created_at)
_READ = select(_RECORDS.c.principal, _RECORDS.c.response, _RECORDS.c.created_at).where(
    _RECORDS.c.idem_key == bindparam("idem_key")
)
_COUNT = select(func.count()).select_from(_RECORDS)
AT = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def _row(key: str) -> dict[str, Any]:
    return {
        "principal": "p",
        "idem_key": key,
        "operation": "run.event",
        "fingerprint": "f" * 64,
        "status_code": 201,
        "response": {"run_key": "ado:p:1", "n": [1, 2]},
        "created_at": AT,
    }


def _count(ctx: Any) -> int:
    with ctx.db.read() as session:
        return int(session.execute(_COUNT).scalar_one())


def test_it_writes_and_reads_what_sqlalchemy_does(ctx):
    heard: list[str] = []

    def action(transaction: CoreTransaction) -> tuple[Any, ...]:
        [(inserted_id, response, created_at)] = transaction.execute(_INSERT, _row("a"))
        assert isinstance(inserted_id, int)
        assert response == {"run_key": "ado:p:1", "n": [1, 2]}
        assert created_at == AT
        assert created_at.tzinfo is UTC
        transaction.on_commit(lambda: heard.append("committed"))
        assert heard == []
        [read] = transaction.execute(_READ, {"idem_key": "a"})
        assert transaction.execute(_READ, {"idem_key": "absent"}) == []
        return read

    read = ctx.db.run_core(action)
    assert heard == ["committed"]
    with ctx.db.read() as session:
        expected = tuple(session.execute(_READ, {"idem_key": "a"}).one())
    assert read == expected
    assert [type(value) for value in read] == [type(value) for value in expected]
    assert read[2].tzinfo is UTC


def test_an_error_in_the_action_rolls_everything_back(ctx):
    heard: list[str] = []

    def action(transaction: CoreTransaction) -> None:
        transaction.execute(_INSERT, _row("b"))
        transaction.on_commit(lambda: heard.append("committed"))
        raise LookupError("refused after writing")

    with pytest.raises(LookupError):
        ctx.db.run_core(action)
    assert heard == []
    assert _count(ctx) == 0
    ctx.db.run_core(lambda transaction: transaction.execute(_INSERT, _row("b")))
    assert _count(ctx) == 1


def test_a_driver_error_is_repeated_through_sqlalchemy_and_is_its_error(ctx):
    """A unique violation on the direct path rolls it back and runs the action again on
    SQLAlchemy's connection, whose IntegrityError the service retries (`run_core`)."""
    ctx.db.run_core(lambda transaction: transaction.execute(_INSERT, _row("c")))
    runs: list[int] = []

    def action(transaction: CoreTransaction) -> None:
        runs.append(1)
        transaction.execute(_INSERT, _row("d"))
        transaction.execute(_INSERT, _row("c"))  # taken

    with pytest.raises(IntegrityError):
        ctx.db.run_core(action)
    # PostgreSQL: once straight through the driver, once through SQLAlchemy; SQLite: once.
    assert len(runs) == (2 if ctx.db.dialect == "postgresql" else 1)
    assert _count(ctx) == 1
    # The pooled connections are usable afterwards (no transaction left open on them).
    ctx.db.run_core(lambda transaction: transaction.execute(_INSERT, _row("d")))
    assert _count(ctx) == 2


@POSTGRESQL_ONLY
def test_a_schema_error_is_sqlalchemys(ctx):
    with ctx.db.write() as session:
        session.execute(text("ALTER TABLE azdev_idempotency RENAME COLUMN response TO gone"))
    with pytest.raises(ProgrammingError):
        ctx.db.run_core(lambda transaction: transaction.execute(_INSERT, _row("e")))


@POSTGRESQL_ONLY
def test_connections_the_server_dropped_are_replaced(ctx, db_url):
    ctx.db.run_core(lambda transaction: transaction.execute(_INSERT, _row("f")))
    other = create_engine(db_url, poolclass=NullPool)
    with other.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    other.dispose()
    assert killed >= 1
    ctx.run_core(lambda transaction: transaction.execute(_INSERT, _row("g")))
    assert _count(ctx) == 2


@POSTGRESQL_ONLY
def test_a_connection_lost_during_commit_is_an_unknown_outcome(ctx, db_url):
    """The server ends the transaction's backend just before the COMMIT is sent: nobody can
    tell whether it committed, and run_core says so instead of an error that implies nothing
    changed (or the driver's own error)."""
    killer = create_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    heard: list[str] = []

    def action(transaction: CoreTransaction) -> None:
        transaction.execute(_INSERT, _row("h"))
        [(pid,)] = transaction.execute(select(func.pg_backend_pid()))
        with killer.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        transaction.on_commit(lambda: heard.append("committed"))

    try:
        with pytest.raises(CommitOutcomeUnknown) as raised:
            ctx.db.run_core(action)
    finally:
        killer.dispose()
    assert raised.value.extensions["outcome"] == "unknown"
    assert heard == []
    # The dead connection left the pool: the next transaction goes through.
    ctx.run_core(lambda transaction: transaction.execute(_INSERT, _row("i")))
    assert _count(ctx) == 1


@POSTGRESQL_ONLY
def test_statements_with_python_side_defaults_are_refused(ctx):
    """The driver's path does not compute a column's Python-side default: such a statement is
    refused rather than run without it."""
    table = Table(
        "azdev_idempotency", MetaData(), Column("status_code", Integer, default=lambda: 7)
    )
    with pytest.raises(TypeError):
        ctx.db.run_core(lambda transaction: transaction.execute(insert(table), {}))
    assert _count(ctx) == 0


def test_a_repeated_parameter_a_literal_percent_and_a_bound_limit(ctx):
    """Parameters go as SQLAlchemy binds them: a parameter used twice, `%` in the SQL, and
    SQLAlchemy's own bound values (a LIMIT) compiled into the statement."""
    ctx.db.run_core(lambda transaction: transaction.execute(_INSERT, _row("p1")))
    ctx.db.run_core(lambda transaction: transaction.execute(_INSERT, _row("p2")))
    twice = select(
        bindparam("n", type_=Integer) + bindparam("n", type_=Integer),
        text("'50%'"),
        _RECORDS.c.idem_key.like(bindparam("pattern")),
    ).select_from(_RECORDS)
    limited = select(_RECORDS.c.idem_key).order_by(_RECORDS.c.idem_key.desc()).limit(1)

    def action(transaction: CoreTransaction) -> tuple[Any, Any]:
        return (
            transaction.execute(twice, {"n": 21, "pattern": "p%"}),
            transaction.execute(limited),
        )

    rows, last = ctx.db.run_core(action)
    assert rows == [(42, "50%", True), (42, "50%", True)]
    assert last == [("p2",)]
