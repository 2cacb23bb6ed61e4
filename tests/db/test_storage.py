"""Storage on both backends: UTC datetimes, append-only tables, migrations, SQLite setup."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError, StatementError

from azdev_ica.auth.principal import Actor
from azdev_ica.cli.main import main
from azdev_ica.db import migrate
from azdev_ica.db.engine import Database, make_engine
from azdev_ica.db.tables import APPEND_ONLY_TABLES, Base
from azdev_ica.db.types import UTCDateTime
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services.audit import append_audit

DB_PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Statements only one dialect has: narrow the `db_url` parametrisation instead of skipping.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware = st.datetimes(
    min_value=datetime(1900, 1, 2),  # noqa: DTZ001 - bounds of a strategy, zones added below
    max_value=datetime(2200, 12, 30),  # noqa: DTZ001
    timezones=st.one_of(offsets, st.timezones()),
)


# --- UTCDateTime -------------------------------------------------------------------------


@pytest.fixture
def times(database: Database) -> Table:
    """A scratch table with one UTCDateTime column, on the test's database."""
    table = Table(
        "ica_test_times",
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("at", UTCDateTime()),
    )
    table.create(database.engine)
    return table


_ids = itertools.count(1)


class TestUTCDateTime:
    @DB_PROPERTY
    @given(value=aware)
    @example(value=datetime(2026, 11, 2, 23, 30, tzinfo=ZoneInfo("Pacific/Kiritimati")))
    @example(value=datetime(2026, 11, 2, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=-12))))
    # A DST fold: 23:00 happened twice in Buenos Aires that night; both are distinct instants.
    @example(value=datetime(2008, 3, 15, 23, 0, tzinfo=ZoneInfo("America/Argentina/Buenos_Aires")))
    @example(
        value=datetime(
            2008, 3, 15, 23, 0, fold=1, tzinfo=ZoneInfo("America/Argentina/Buenos_Aires")
        )
    )
    def test_an_aware_datetime_reads_back_as_the_same_instant_in_utc(self, database, times, value):
        row_id = next(_ids)
        with database.engine.begin() as conn:
            conn.execute(insert(times).values(id=row_id, at=value))
        with database.engine.connect() as conn:
            back = conn.scalar(select(times.c.at).where(times.c.id == row_id))
        # Compare in UTC: Python calls an ambiguous local time (a DST fold) unequal to every
        # datetime of another zone, even to the same instant.
        assert back.utcoffset() == timedelta(0)
        assert back == value.astimezone(UTC)
        assert back.timestamp() == value.timestamp()

    @DB_PROPERTY
    @given(values=st.lists(aware, min_size=2, max_size=8))
    def test_the_database_orders_and_compares_by_instant(self, database, times, values):
        with database.engine.begin() as conn:
            conn.execute(text("DELETE FROM ica_test_times"))
            conn.execute(insert(times), [{"id": i, "at": v} for i, v in enumerate(values)])
        with database.engine.connect() as conn:
            ordered = list(conn.scalars(select(times.c.id).order_by(times.c.at, times.c.id)))
            pivot = values[0]
            before = set(conn.scalars(select(times.c.id).where(times.c.at < pivot)))
        instants = [value.astimezone(UTC) for value in values]
        assert ordered == sorted(range(len(values)), key=lambda i: (instants[i], i))
        assert before == {i for i, instant in enumerate(instants) if instant < instants[0]}

    def test_an_offset_is_converted_not_dropped(self, database, times):
        # SQLite would store 12:00+02:00 as a bare 12:00 with a plain DateTime.
        noon_in_apia = datetime(2026, 11, 2, 12, 0, tzinfo=timezone(timedelta(hours=13)))
        with database.engine.begin() as conn:
            conn.execute(insert(times).values(id=1, at=noon_in_apia))
        with database.engine.connect() as conn:
            back = conn.scalar(select(times.c.at))
            later_utc = conn.scalar(
                select(times.c.id).where(times.c.at < datetime(2026, 11, 2, 0, 0, 1, tzinfo=UTC))
            )
            if database.dialect == "sqlite":
                stored = conn.scalar(text("SELECT at FROM ica_test_times"))
                assert str(stored).startswith("2026-11-01 23:00:00")
        assert back == datetime(2026, 11, 1, 23, 0, tzinfo=UTC)
        assert later_utc == 1

    def test_null_stays_null(self, database, times):
        with database.engine.begin() as conn:
            conn.execute(insert(times).values(id=1, at=None))
        with database.engine.connect() as conn:
            assert conn.scalar(select(times.c.at)) is None

    def test_a_naive_datetime_is_refused_on_write(self, database, times):
        naive = datetime(2026, 11, 2, 12, 0)  # noqa: DTZ001
        with (
            pytest.raises(StatementError, match="naive datetime refused"),
            database.engine.begin() as conn,
        ):
            conn.execute(insert(times).values(id=1, at=naive))
        with database.engine.connect() as conn:
            assert conn.scalar(select(times.c.id)) is None

    def test_a_naive_datetime_is_refused_in_a_query(self, database, times):
        naive = datetime(2026, 11, 2, 12, 0)  # noqa: DTZ001
        with (
            pytest.raises(StatementError, match="naive datetime refused"),
            database.engine.connect() as conn,
        ):
            conn.execute(select(times.c.id).where(times.c.at < naive))


# --- append-only tables ------------------------------------------------------------------


# Per append-only table: the integer key column to bump for a new row, the column an UPDATE
# would tamper with, and columns that are unique on their own (changed in a copy).
@dataclass(frozen=True)
class Spec:
    bump: str
    change: str
    unique: tuple[str, ...] = ()
    nulls: tuple[str, ...] = ()


SPECS = {
    "azdev_policy_version": Spec(bump="id", change="document"),
    "azdev_audit_inbox": Spec(bump="id", change="action"),
    "azdev_audit_shard": Spec(bump="year", change="origin", unique=("origin",)),
    "azdev_audit_entry": Spec(bump="idx", change="action", nulls=("inbox_id",)),
    "azdev_audit_node": Spec(bump="seq", change="seq"),
    "azdev_audit_tree": Spec(bump="size", change="size"),
    "azdev_audit_checkpoint": Spec(bump="size", change="note"),
    "azdev_audit_key": Spec(bump="id", change="name", unique=("vkey",)),
}
APPEND_ONLY = list(SPECS)


def columns(table: str) -> list[str]:
    return [column.name for column in Base.metadata.tables[table].columns]


def primary_key(table: str) -> list[str]:
    return [column.name for column in Base.metadata.tables[table].primary_key.columns]


def tampered(table: str, column: str) -> str:
    """An SQL expression for a changed value of `column` of `table`."""
    kind = Base.metadata.tables[table].columns[column].type.python_type
    return f"{column} + 1000000" if kind is int else "'tampered'"


def copy_of(table: str, *, fresh: bool) -> tuple[str, str]:
    """Column list and SELECT list copying a row: with its own key (a collision) or a new one."""
    spec = SPECS[table]
    values = []
    for name in columns(table):
        if name == spec.change and not fresh and name not in primary_key(table):
            values.append(tampered(table, name))
        elif fresh and name == spec.bump:
            values.append(f"{name} + 100000")
        elif fresh and name in spec.unique:
            values.append(f"{name} || '-copy'")
        elif fresh and name in spec.nulls:
            values.append("NULL")
        else:
            values.append(name)
    return ", ".join(columns(table)), ", ".join(values)


def first_row(table: str) -> str:
    return f"{SPECS[table].bump} = (SELECT min({SPECS[table].bump}) FROM {table})"  # noqa: S608


def snapshot(database: Database, table: str) -> list[tuple[Any, ...]]:
    order = ", ".join(primary_key(table))
    with database.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]  # noqa: S608


def refused(database: Database, statement: str, *, before: str | None = None) -> str:
    """Run `statement` in its own transaction; return the database's refusal message."""
    with pytest.raises(DBAPIError) as caught:
        execute(database, *([before] if before else []), statement)
    return str(caught.value.orig)


def execute(database: Database, *statements: str) -> None:
    with database.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


@pytest.mark.parametrize("table", APPEND_ONLY)
class TestAppendOnly:
    @pytest.fixture(autouse=True)
    def _rows(self, ctx: Any) -> None:
        # The ctx fixture applied a policy (a version and its audit record); 64 more records
        # (the sealer stores tree nodes from level 6 up) and sealing fill every ledger table.
        with ctx.db.write() as session:
            for n in range(64):
                append_audit(
                    session,
                    actor=Actor(kind="system", id="test"),
                    action="test.fill",
                    subject_type="test",
                    subject_id=str(n),
                    tenant=None,
                    data={},
                    at=ctx.clock.now(),
                )
        seal_now(ctx)
        for table in APPEND_ONLY:
            assert snapshot(ctx.db, table), table

    def test_update_is_refused(self, database, table):
        rows = snapshot(database, table)
        change = SPECS[table].change
        statement = f"UPDATE {table} SET {change} = {tampered(table, change)}"  # noqa: S608
        assert "append-only" in refused(database, statement)
        assert snapshot(database, table) == rows

    def test_delete_is_refused(self, database, table):
        rows = snapshot(database, table)
        for statement in (f"DELETE FROM {table}", f"DELETE FROM {table} WHERE {first_row(table)}"):  # noqa: S608
            assert "append-only" in refused(database, statement)
        assert snapshot(database, table) == rows

    def test_an_upsert_onto_a_kept_row_is_refused(self, database, table):
        rows = snapshot(database, table)
        names, values = copy_of(table, fresh=False)
        key = ", ".join(primary_key(table))
        statement = (
            f"INSERT INTO {table} ({names}) SELECT {values} FROM {table} "  # noqa: S608
            f"WHERE {first_row(table)} ON CONFLICT ({key}) DO UPDATE SET {SPECS[table].change} "
            f"= excluded.{SPECS[table].change}"
        )
        assert "append-only" in refused(database, statement)
        assert snapshot(database, table) == rows

    def test_appending_still_works(self, database, table):
        before = len(snapshot(database, table))
        names, values = copy_of(table, fresh=True)
        execute(
            database,
            f"INSERT INTO {table} ({names}) SELECT {values} FROM {table} WHERE {first_row(table)}",  # noqa: S608
        )
        assert len(snapshot(database, table)) == before + 1

    @SQLITE_ONLY
    def test_insert_or_replace_is_refused_on_sqlite(self, database, table):
        rows = snapshot(database, table)
        names, values = copy_of(table, fresh=False)
        for verb in ("INSERT OR REPLACE", "REPLACE"):
            statement = (
                f"{verb} INTO {table} ({names}) SELECT {values} FROM {table} "  # noqa: S608
                f"WHERE {first_row(table)}"
            )
            assert "append-only" in refused(database, statement)
        assert snapshot(database, table) == rows

    @POSTGRESQL_ONLY
    def test_truncate_is_refused_on_postgresql(self, database, table):
        rows = snapshot(database, table)
        assert "append-only" in refused(database, f"TRUNCATE {table}")
        assert "append-only" in refused(database, f"TRUNCATE {table} CASCADE")
        assert snapshot(database, table) == rows

    @POSTGRESQL_ONLY
    def test_replica_mode_does_not_switch_the_guard_off_on_postgresql(self, database, table):
        # The triggers are ENABLE ALWAYS: logical-replication mode must not bypass them.
        rows = snapshot(database, table)
        replica = "SET LOCAL session_replication_role = replica"
        change = SPECS[table].change
        update = f"UPDATE {table} SET {change} = {tampered(table, change)}"  # noqa: S608
        assert "append-only" in refused(database, update, before=replica)
        assert "append-only" in refused(database, f"DELETE FROM {table}", before=replica)  # noqa: S608
        assert snapshot(database, table) == rows


def test_a_replace_colliding_on_a_second_unique_key_is_refused_on_sqlite(tmp_path):
    """INSERT OR REPLACE with a fresh primary key but a taken `inbox_id` would delete the
    entry that holds it: the guard checks every unique key, not only the primary key."""
    url = f"sqlite:///{tmp_path / 'ica.db'}"
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        values = (
            "2026, {idx}, 7, x'7b7d', '2026-01-01 00:00:00', 'a', 'system', 's', 't', 'i', NULL,"
            " NULL"
        )
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO azdev_audit_entry VALUES ({values.format(idx=0)})"))  # noqa: S608
        with pytest.raises(DBAPIError, match="REPLACE refused"), engine.begin() as conn:
            conn.execute(
                text(f"INSERT OR REPLACE INTO azdev_audit_entry VALUES ({values.format(idx=1)})")  # noqa: S608
            )
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT idx FROM azdev_audit_entry")) == 0
    finally:
        engine.dispose()


def test_the_erasable_tables_are_not_append_only(ctx, database):
    """Personal data openings must be erasable, and the lease is taken by conditional writes."""
    seal_now(ctx)
    execute(database, "DELETE FROM azdev_audit_personal", "DELETE FROM azdev_job_lease")


# --- migrations --------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty_db_url: str) -> str:
    monkeypatch.setenv("ICA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ICA_DATABASE_URL", empty_db_url)
    monkeypatch.delenv("ICA_SECRET_KEY", raising=False)
    return empty_db_url


class TestMigrations:
    def test_upgrade_twice_is_idempotent_and_current_is_head(self, cli_env, capsys):
        head = migrate.head_revision()
        assert head is not None
        assert main(["db", "current"]) == 3
        assert "(empty)" in capsys.readouterr().out

        assert main(["db", "upgrade"]) == 0
        assert f"revision {head}" in capsys.readouterr().out
        engine = make_engine(cli_env)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert main(["db", "upgrade"]) == 0
        assert f"revision {head}" in capsys.readouterr().out

        assert main(["db", "current"]) == 0
        assert capsys.readouterr().out.strip() == f"{head} (head: {head})"
        engine = make_engine(cli_env)
        try:
            assert migrate.is_current(engine)
            assert set(inspect(engine).get_table_names()) == tables
        finally:
            engine.dispose()
        assert set(Base.metadata.tables) <= tables

    def test_the_migrated_schema_matches_the_tables(self, database):
        # A model changed without a migration (or the reverse) shows up here.
        with database.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []

    def test_the_append_only_guard_comes_with_the_migration(self, empty_db_url):
        engine = make_engine(empty_db_url)
        try:
            migrate.upgrade(engine)
            migrate.upgrade(engine)
            with engine.connect() as conn:
                if engine.dialect.name == "postgresql":
                    query = (
                        "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal "
                        "AND tgrelid::regclass::text LIKE 'azdev_%'"
                    )
                else:
                    query = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
                triggers = conn.scalar(text(query))
        finally:
            engine.dispose()
        # Per table: update, delete and (PostgreSQL) truncate or (SQLite) replace.
        per_table = 2 if engine.dialect.name == "postgresql" else 3
        assert triggers == len(APPEND_ONLY_TABLES) * per_table


# --- engine setup ------------------------------------------------------------------------


class TestSqliteSetup:
    def test_every_connection_runs_in_wal_with_foreign_keys_and_a_busy_timeout(
        self, tmp_path: Path
    ):
        engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'ica.db'}", busy_timeout_ms=2500)
        try:
            with engine.connect() as first, engine.connect() as second:
                for conn in (first, second):
                    assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                    assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                    assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
        finally:
            engine.dispose()
        assert (tmp_path / "nested" / "ica.db").exists()

    def test_an_unsupported_database_is_refused(self):
        with pytest.raises(ValueError, match="unsupported database"):
            make_engine("mysql://localhost/ica")


def test_foreign_keys_are_enforced(database):
    statement = text(
        "INSERT INTO azdev_pipeline_event "
        "(run_pk, event_id, attempt, phase, occurred_at, recorded_at, data) "
        "VALUES (424242, 'e1', 1, 'build', '2026-11-02 09:00:00', '2026-11-02 09:00:00', '{}')"
    )
    with pytest.raises(DBAPIError, match=r"(?i)foreign key"), database.engine.begin() as conn:
        conn.execute(statement)
