"""`db.engine.driver_rows`: the gate's statements run straight through the driver on
PostgreSQL, inside the Session's transaction. They must read and write exactly what the
Session would, and a driver error must be the Session's error (the same exception class,
the connection invalidated on a disconnect), so that retries and 503s do not change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import (
    Table,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from azdev_ica.db.engine import driver_rows
from azdev_ica.db.tables import GateEvaluation

POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
_DECISION = cast(Table, GateEvaluation.__table__)
c = _DECISION.c
# JSON and aware times bound and read back, a parameter used twice, a value bound in the
# statement itself (the LIMIT's), a literal percent sign.
# Every value bound by name (an INSERT's columns are not chosen by the parameters given).
_INSERT = (
    insert(_DECISION)
    .values({col.name: bindparam(col.name) for col in _DECISION.c if col.name != "id"})
    .returning(c.id, c.codes, c.decided_at)
)
_WITH_ID = insert(_DECISION).values({col.name: bindparam(col.name) for col in _DECISION.c})
_READ = (
    select(c.id, c.codes, c.decided_at, c.approval_id, literal("x%y").label("text"))
    .where(
        or_(c.run_key == bindparam("key"), c.decided_by == bindparam("key")),
        c.run_key.like(literal_column("'gate%'")),
    )
    .order_by(c.id)
    .limit(5)
)
# A list parameter SQLAlchemy expands at each execution: left to the Session.
_EXPANDING = select(c.id).where(c.status.in_(["allow", "deny"])).order_by(c.id)


def _row(at: datetime, **values: Any) -> dict[str, Any]:
    return {
        "run_pk": None, "run_key": "gate-1", "tenant": "to", "stage": "production",
        "artifact_digest": None, "commit": None, "status": "allow", "codes": ["a", "b"],
        "approval_id": None, "override_id": None, "policy_hash": "0" * 64, "decided_at": at,
        "decided_by": "api_key:ci", **values,
    }  # fmt: skip


def test_it_writes_and_reads_what_a_session_does(ctx):
    at = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    with ctx.db.write() as session:
        (written,) = driver_rows(session, _INSERT, _row(at))
        session.execute(insert(_DECISION), _row(at + timedelta(hours=1), codes=["c"]))
    assert written.codes == ["a", "b"]
    assert written.decided_at == at
    assert written.decided_at.tzinfo is UTC
    with ctx.db.read() as session:
        direct = driver_rows(session, _READ, {"key": "gate-1"})
        through_session = session.execute(_READ, {"key": "gate-1"}).all()
        expanded = driver_rows(session, _EXPANDING, {})
        stored = session.scalars(select(c.codes).where(c.id == written.id)).one()
    assert [tuple(row) for row in direct] == [tuple(row) for row in through_session]
    assert [type(v) for v in direct[0]] == [type(v) for v in through_session[0]]
    assert direct[0].id == written.id
    assert direct[1].codes == ["c"]
    assert direct[0].text == "x%y"
    assert [row.id for row in expanded] == [row.id for row in direct]
    assert stored == ["a", "b"]  # stored as JSON, not as its text


@POSTGRESQL_ONLY
def test_a_driver_error_is_the_sessions_error(ctx):
    at = datetime(2026, 5, 1, tzinfo=UTC)
    with ctx.db.write() as session:
        (first,) = driver_rows(session, _INSERT, _row(at))
    with pytest.raises(IntegrityError), ctx.db.write() as session:
        driver_rows(session, _WITH_ID, _row(at, id=first.id))
    # Rolled back, and the pooled connection is usable afterwards.
    with ctx.db.read() as session:
        assert session.scalar(select(func.count()).select_from(_DECISION)) == 1


@POSTGRESQL_ONLY
def test_a_dropped_connection_is_invalidated_like_the_sessions(ctx):
    session = Session(ctx.db.engine)
    try:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with ctx.db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        with pytest.raises(OperationalError) as raised:
            driver_rows(session, _READ, {"key": "gate-1"})
        assert raised.value.connection_invalidated
    finally:
        session.close()
    # The dead connection left the pool: the next transaction runs.
    with ctx.db.read() as session:
        assert driver_rows(session, _READ, {"key": "gate-1"}) == []
