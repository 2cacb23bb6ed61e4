"""`Database.first_row`: the read every API request starts with, straight through the driver
on PostgreSQL, must read exactly what a Session reads, and fall back to the Session's path
(its errors, its retry on a fresh connection) whenever the driver fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from azdev_ica.auth.apikeys import parse_prefix
from azdev_ica.db.tables import ApiKey
from azdev_ica.services.apikeys import _KEY_BY_PREFIX

POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _session_row(ctx: Any, params: dict[str, Any]) -> tuple[Any, ...] | None:
    row = ctx.db.first_read(lambda session: session.execute(_KEY_BY_PREFIX, params).first())
    return None if row is None else tuple(row)


def test_it_reads_what_a_session_reads(ctx, make_key):
    params = {"prefix": parse_prefix(make_key("azdev_devops"))}
    used = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    with ctx.db.write() as session:
        session.execute(
            update(ApiKey).values(
                tenants=["ws", "fj"], last_used_at=used, expires_at=used + timedelta(days=9)
            )
        )
    found = ctx.db.first_row(_KEY_BY_PREFIX, params)
    assert found == _session_row(ctx, params)
    assert found is not None
    assert found[5] == ["ws", "fj"]
    assert found[-1] == used
    assert found[-1].tzinfo is UTC
    assert [type(value) for value in found] == [type(value) for value in _session_row(ctx, params)]
    assert ctx.db.first_row(_KEY_BY_PREFIX, {"prefix": "absent"}) is None


@POSTGRESQL_ONLY
def test_times_come_back_in_utc_whatever_the_servers_time_zone(ctx, make_key, db_url):
    params = {"prefix": parse_prefix(make_key("azdev_devops"))}
    with ctx.db.engine.connect() as conn:
        database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone TO 'Pacific/Auckland'")
        conn.commit()
    ctx.db.engine.dispose()  # new connections take the database's time zone
    with ctx.db.write() as session:
        session.execute(update(ApiKey).values(last_used_at=datetime(2026, 1, 2, 3, tzinfo=UTC)))
    found = ctx.db.first_row(_KEY_BY_PREFIX, params)
    assert found is not None
    assert found[-1] == datetime(2026, 1, 2, 3, tzinfo=UTC)
    assert found[-1].utcoffset() == timedelta(0)


@POSTGRESQL_ONLY
def test_a_connection_the_server_dropped_is_replaced(ctx, make_key, db_url):
    params = {"prefix": parse_prefix(make_key("azdev_devops"))}
    expected = ctx.db.first_row(_KEY_BY_PREFIX, params)
    other = create_engine(db_url, poolclass=NullPool)
    with other.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert killed >= 1
    # Every idle pooled connection is dead now: the read still answers, on a fresh one.
    assert ctx.db.first_row(_KEY_BY_PREFIX, params) == expected
    assert ctx.db.first_row(_KEY_BY_PREFIX, params) == expected


@POSTGRESQL_ONLY
def test_a_driver_error_is_the_sessions_error(ctx, make_key):
    with ctx.db.write() as session:
        session.execute(text("ALTER TABLE azdev_api_key RENAME COLUMN stages TO stages_gone"))
    with pytest.raises(DBAPIError):
        ctx.db.first_row(_KEY_BY_PREFIX, {"prefix": "anything"})
    # The pooled connection is usable afterwards (no transaction left open on it).
    with ctx.db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
