"""Engine setup per dialect, the two kinds of session (read and write), and write transactions
of Core statements that run straight through the driver on PostgreSQL (`Database.run_core`)."""

from __future__ import annotations

import os
import re
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Connection, Engine, Executable, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import UpdateBase

from azdev_ica.errors import CommitOutcomeUnknown

T = TypeVar("T")


def make_engine(url: str, *, pool_size: int = 10, busy_timeout_ms: int = 10_000) -> Engine:
    """An engine for `url`: SQLite (WAL, foreign keys, explicit BEGIN) or PostgreSQL (psycopg 3)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            _private_file(Path(database))
        # hide_parameters: a failed statement is logged without its values (tokens, names).
        engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            url,
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No ping per checkout (a round trip per transaction): a connection the server
            # dropped fails its first statement instead, which marks it (and every pooled
            # connection older than it) invalid; the action is then repeated once on a fresh
            # connection (`ServiceContext.run_action`, `Database.first_read`). Idle
            # connections are renewed after an hour (and always a little before any
            # firewall's idle timeout).
            pool_recycle=3600,
            # Pipelines retry; a request must never hang on a lock for long.
            connect_args={"options": "-c lock_timeout=10000 -c statement_timeout=30000"},
        )
    backend = parsed.get_backend_name()
    raise UnsupportedDatabase(f"unsupported database {backend!r}: use sqlite or postgresql")


def private_directory(path: Path) -> None:
    """Create `path` and its missing parents as 0700, whatever the umask. A directory that
    exists already is left as its owner made it (it may be shared, e.g. the working one)."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)


def _private_file(path: Path) -> None:
    """Create the SQLite file as 0600 (and its directory as 0700) before SQLite does, so the
    database is never readable by others, whatever the umask. SQLite gives its -wal and -shm
    files the database file's mode."""
    private_directory(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)


# Seconds a client is asked to wait when the database cannot be reached (a restart or a
# failover takes seconds; the pipeline client backs off further by itself).
UNAVAILABLE_RETRY_AFTER = 2
# PostgreSQL SQLSTATE classes and codes that mean "not now" rather than "not ever":
# 08 connection exception, 53 insufficient resources (too many connections), 57 operator
# intervention (admin/crash shutdown, cannot connect now, statement timeout), and the
# serialization failure, deadlock and lock timeout a retry may get past.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})
_UNAVAILABLE_CODES = frozenset({"40001", "40P01", "55P03"})


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot serve just now (a lost or refused connection,
    a restart, a busy SQLite file), as opposed to a fault in the request or the code."""
    if isinstance(exc, SqlTimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _UNAVAILABLE_CLASSES or sqlstate in _UNAVAILABLE_CODES
    if exc.orig is not None and type(exc.orig).__module__.startswith("sqlite3"):
        message = str(exc.orig)
        return "database is locked" in message or "database is busy" in message
    # psycopg raises OperationalError without a SQLSTATE when there is no connection at all
    # (refused, reset, closed by the server).
    return True


class UnsupportedDatabase(ValueError):
    """The database URL names a backend ICA does not run on."""


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    # Python 3.11's sqlite3 opens transactions implicitly and too late (legacy transaction
    # control), which breaks SAVEPOINTs and lets two writers both read before either
    # writes. SQLAlchemy's documented recipe: turn that off and emit BEGIN ourselves.
    # Writers take BEGIN IMMEDIATE, so a read-then-write action holds the write lock from
    # its first statement and concurrent writers queue on busy_timeout instead of failing
    # with "database is locked" half way.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    # WAL with synchronous=NORMAL may lose the last commits on a power loss (never corrupts).
    # That is fine for an action, whose caller retries, but not for the sealer's transactions:
    # the checkpoints it publishes are fsynced to the outside store, and a database that lost
    # the commit behind a published checkpoint is behind its own log (the sealer then refuses
    # for ever). Durable transactions (`Database.write(durable=True)`) run with
    # synchronous=FULL: their commit is fsynced before they return.
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        durable = "FULL" if options.get("ica_durable", False) else "NORMAL"
        if conn.info.get("ica_synchronous") != durable:  # outside a transaction: allowed
            conn.exec_driver_sql(f"PRAGMA synchronous={durable}")
            conn.info["ica_synchronous"] = durable
        immediate = options.get("ica_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass(frozen=True)
class _DirectRead:
    """A SELECT compiled once for the driver: its SQL and each column's result processor."""

    sql: str
    processors: tuple[Callable[[Any], Any] | None, ...]


def _commit_outcome_unknown() -> CommitOutcomeUnknown:
    return CommitOutcomeUnknown(
        "the database connection was lost while the change was being committed: it may or "
        "may not be recorded; repeat the request with the same Idempotency-Key (a recorded "
        "write is answered with its record)",
        retry_after_seconds=UNAVAILABLE_RETRY_AFTER,
        outcome="unknown",
    )


class CoreTransaction(Protocol):
    """One write transaction of Core statements (`Database.run_core`): no Session, no ORM
    objects, rows as plain tuples with each column's result processing applied (times aware
    in UTC, JSON decoded), parameters bound with each column type's bind processing."""

    @property
    def dialect(self) -> str:
        """`postgresql` or `sqlite`."""
        ...

    def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run `statement` (a module-level statement, built once) with `params`; its rows
        (none for a statement that returns none)."""
        ...

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the transaction has committed (never when it rolls back)."""
        ...


class _Callbacks:
    def __init__(self) -> None:
        self._after_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def committed(self) -> None:
        for callback in self._after_commit:
            callback()


class _ConnectionTransaction(_Callbacks):
    """A CoreTransaction on a SQLAlchemy Connection: SQLite, and PostgreSQL whenever the
    driver's own path failed (its errors and events are then SQLAlchemy's, as a Session's)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection

    @property
    def dialect(self) -> str:
        return self._connection.dialect.name

    def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        result = self._connection.execute(statement, dict(params or {}))
        return [tuple(row) for row in result] if result.returns_rows else []


@dataclass(frozen=True)
class _DirectStatement:
    """A statement compiled once for the driver: its SQL, how its parameters are bound and
    each result column's processor."""

    sql: str
    compiled: Any
    binders: tuple[tuple[str, Callable[[Any], Any]], ...]
    processors: tuple[Callable[[Any], Any] | None, ...]  # empty: columns of unknown types

    def parameters(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        bound: dict[str, Any] = self.compiled.construct_params(dict(params or {}))
        for name, process in self.binders:
            if name in bound:
                bound[name] = process(bound[name])
        return bound

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        processors = self.processors
        if not any(processors):
            return [tuple(row) for row in raw]
        return [
            tuple(
                value if process is None else process(value)
                for value, process in zip(row, processors, strict=True)
            )
            for row in raw
        ]


class _DriverFailed(Exception):
    """The driver refused a statement of a direct transaction: it is rolled back and the action
    repeated through SQLAlchemy."""


class _DriverTransaction(_Callbacks):
    """A CoreTransaction straight through psycopg on a pooled connection (PostgreSQL)."""

    def __init__(self, database: Database, driver: Any) -> None:
        super().__init__()
        self._database = database
        self._driver = driver

    @property
    def dialect(self) -> str:
        return "postgresql"

    def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        direct = self._database._direct_statement(statement, params)
        try:
            cursor = self._driver.execute(direct.sql, direct.parameters(params))
            # rownumber is None when the statement returned no rows to fetch.
            raw = cursor.fetchall() if cursor.rownumber is not None else []
        except self._database.engine.dialect.loaded_dbapi.Error as exc:
            raise _DriverFailed(str(exc)) from exc
        return direct.rows(raw)


class Database:
    """The database of one ICA process: an engine and its two session factories."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write = sessionmaker(
            bind=engine.execution_options(ica_write=True), expire_on_commit=False
        )
        self._durable = sessionmaker(
            bind=engine.execution_options(ica_write=True, ica_durable=True),
            expire_on_commit=False,
        )
        self._read = sessionmaker(bind=engine, expire_on_commit=False)
        # A lone statement needs no transaction around it: on PostgreSQL, psycopg sends BEGIN
        # and the closing ROLLBACK as round trips of their own, so one read in autocommit mode
        # is one round trip instead of three (SQLite's BEGIN costs no round trip: unchanged).
        self._lone = (
            sessionmaker(
                bind=engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )
            if engine.dialect.name == "postgresql"
            else self._read
        )
        self._direct_reads: dict[int, tuple[Select[Any], _DirectRead]] = {}
        self._direct_statements: dict[
            tuple[int, tuple[str, ...]], tuple[Executable, _DirectStatement]
        ] = {}
        self._core_write = engine.execution_options(ica_write=True)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        return cls(make_engine(url, **kwargs))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self, *, durable: bool = False) -> Iterator[Session]:
        """One write transaction: commits when the block ends, rolls back on error.

        ``durable``: on SQLite, the commit is fsynced (synchronous=FULL) before it returns,
        for the sealer's transactions (PostgreSQL's commits are durable already).

        When the connection is lost during the COMMIT itself, nobody can tell whether the
        server committed: that raises CommitOutcomeUnknown, never an error that implies
        nothing changed."""
        factory = self._durable if durable else self._write
        with factory() as session:
            session.begin()
            try:
                yield session
            except BaseException:
                session.rollback()
                raise
            try:
                session.commit()
            except DBAPIError as exc:
                if database_unavailable(exc):
                    raise _commit_outcome_unknown() from exc
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (rolled back at the end)."""
        with self._read() as session, session.begin():
            yield session

    def first_read(self, query: Callable[[Session], T]) -> T:
        """`query`, ONE statement, repeated once on a fresh connection when the pooled one
        turned out dead (the server restarted since it was last used): for the first statement
        of a request, which no pool ping precedes. A single statement sees one snapshot by
        itself, so on PostgreSQL it runs in autocommit mode, without BEGIN and ROLLBACK."""
        try:
            with self._lone() as session:
                return query(session)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        with self._lone() as session:
            return query(session)

    def first_row(
        self, statement: Select[Any], params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of `statement` (a module-level SELECT, built once) as a tuple, or
        None: what `first_read` would read, for the statement every API request starts with
        (the caller's key).

        On PostgreSQL it runs straight through the driver on a pooled connection in autocommit
        mode, compiled once, with each column's result processing applied: a Session's
        execution of the same statement costs three times the CPU (callgrind, per request:
        1.0 M instructions against 0.32 M). `params` are sent as they are (the statement may
        have no bind processing). Any driver error (a connection the server dropped, a
        timeout, a schema too old) sends the read through `first_read`, whose errors and
        single retry on a fresh connection are SQLAlchemy's."""
        if self.engine.dialect.name != "postgresql":
            return self._first_row_read(statement, params)
        direct = self._direct_read(statement)
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            pooled = self.engine.raw_connection()
        except dbapi.Error:  # no connection could be made: SQLAlchemy's error, as usual
            return self._first_row_read(statement, params)
        failed = False
        try:
            driver = pooled.driver_connection
            assert driver is not None
            driver.autocommit = True
            try:
                row = driver.execute(direct.sql, params).fetchone()
            finally:
                driver.autocommit = False
        except dbapi.Error as exc:
            if self.engine.dialect.is_disconnect(exc, pooled.dbapi_connection, None):
                pooled.invalidate(exc)
            failed = True
        finally:
            pooled.close()
        if failed:
            return self._first_row_read(statement, params)
        if row is None:
            return None
        return tuple(
            value if process is None else process(value)
            for value, process in zip(row, direct.processors, strict=True)
        )

    def _first_row_read(
        self, statement: Select[Any], params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        row = self.first_read(lambda session: session.execute(statement, params).first())
        return None if row is None else tuple(row)

    def _direct_read(self, statement: Select[Any]) -> _DirectRead:
        known = self._direct_reads.get(id(statement))
        if known is not None and known[0] is statement:
            return known[1]
        dialect = self.engine.dialect
        compiled = statement.compile(dialect=dialect)
        if compiled._bind_processors or "POSTCOMPILE" in compiled.string:
            raise TypeError("first_row runs statements whose parameters are sent as they are")
        processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        )
        direct = _DirectRead(sql=compiled.string, processors=processors)
        self._direct_reads[id(statement)] = (statement, direct)
        return direct

    def run_core(self, action: Callable[[CoreTransaction], T]) -> T:
        """`action` in one write transaction of Core statements: committed when it returns,
        rolled back when it raises. For a hot write path whose statements are built once (Core,
        on the tables): a Session's unit of work, identity map and result objects cost more
        CPU than the statements themselves (callgrind: a two-statement transaction 1.31 M
        instructions through a Session, 0.77 M straight through the driver).

        On PostgreSQL the statements go straight through psycopg on a pooled connection,
        each compiled once, with the columns' bind and result processing applied; the
        transaction is the driver's (BEGIN with the first statement, then COMMIT). When no
        connection can be had, or the driver refuses a statement (a connection the server
        dropped, a unique violation, a lock timeout), nothing is committed: the transaction
        is rolled back and `action` is run again, once, on a SQLAlchemy Connection, so that
        what the caller sees (errors, 503s, the retries of `ServiceContext.run_core`) is
        SQLAlchemy's, as with a Session. SQLite always takes that Connection (with BEGIN
        IMMEDIATE, as `write`).

        As `write`: when the connection is lost during the COMMIT itself, CommitOutcomeUnknown.
        `action` must not swallow exceptions raised by `execute`. Statements with Python-side
        column defaults or expanding parameters are refused (TypeError)."""
        if self.engine.dialect.name == "postgresql":
            try:
                return self._run_direct(action)
            except _DriverFailed:
                pass  # rolled back, nothing committed: once more through SQLAlchemy
        return self._run_connection(action)

    def _run_direct(self, action: Callable[[CoreTransaction], T]) -> T:
        dialect = self.engine.dialect
        dbapi = dialect.loaded_dbapi
        try:
            pooled = self.engine.raw_connection()
        except dbapi.Error as exc:  # no connection could be made: SQLAlchemy's error, as usual
            raise _DriverFailed(str(exc)) from exc
        try:
            driver: Any = pooled.driver_connection
            transaction = _DriverTransaction(self, driver)
            try:
                result = action(transaction)
            except BaseException as exc:
                self._abandon(pooled, exc.__cause__ if isinstance(exc, _DriverFailed) else exc)
                raise
            try:
                driver.commit()
            except dbapi.Error as exc:
                invalidated = dialect.is_disconnect(exc, pooled.dbapi_connection, None)
                if invalidated:
                    pooled.invalidate(exc)
                wrapped = DBAPIError.instance(
                    None, None, exc, dbapi.Error, hide_parameters=True,
                    connection_invalidated=invalidated, dialect=dialect,
                )  # fmt: skip
                if database_unavailable(wrapped):
                    raise _commit_outcome_unknown() from wrapped
                raise wrapped from exc
        finally:
            pooled.close()
        transaction.committed()
        return result

    def _abandon(self, pooled: Any, cause: BaseException | None) -> None:
        """Roll back a direct transaction, or drop its connection when that is what failed."""
        dialect = self.engine.dialect
        dbapi = dialect.loaded_dbapi
        if isinstance(cause, dbapi.Error) and dialect.is_disconnect(
            cause, pooled.dbapi_connection, None
        ):
            pooled.invalidate(cause)
            return
        try:
            pooled.driver_connection.rollback()
        except dbapi.Error as exc:
            pooled.invalidate(exc)

    def _run_connection(self, action: Callable[[CoreTransaction], T]) -> T:
        with self._core_write.connect() as connection:
            transaction = connection.begin()
            core = _ConnectionTransaction(connection)
            try:
                result = action(core)
            except BaseException:
                transaction.rollback()
                raise
            try:
                transaction.commit()
            except DBAPIError as exc:
                if database_unavailable(exc):
                    raise _commit_outcome_unknown() from exc
                raise
        core.committed()
        return result

    def _direct_statement(
        self, statement: Executable, params: Mapping[str, Any] | None
    ) -> _DirectStatement:
        # An INSERT or UPDATE without values of its own sets the columns its parameters name
        # (as SQLAlchemy compiles it): compiled once per set of names.
        dml = isinstance(statement, UpdateBase)
        columns = tuple(params or ()) if dml else ()
        key = (id(statement), columns)
        known = self._direct_statements.get(key)
        if known is not None and known[0] is statement:
            return known[1]
        dialect = self.engine.dialect
        compiled: Any = cast(Any, statement).compile(
            dialect=dialect, column_keys=list(columns) if dml else None
        )
        if compiled.positional or compiled.escaped_bind_names:
            raise TypeError("run_core sends named parameters that need no escaping")
        if "POSTCOMPILE" in compiled.string or any(
            bind.expanding or bind.callable is not None for bind in compiled.bind_names
        ):
            raise TypeError("run_core runs statements without expanding or callable parameters")
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise TypeError("run_core runs statements without Python-side column defaults")
        direct = _DirectStatement(
            sql=compiled.string,
            compiled=compiled,
            binders=tuple(compiled._bind_processors.items()),
            processors=tuple(
                column.type._cached_result_processor(dialect, None)
                for column in compiled._result_columns
            ),
        )
        self._direct_statements[key] = (statement, direct)
        return direct

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled once for psycopg's raw cursor: its SQL with `$n` placeholders,
    each placeholder's parameter name and default, the parameters' bind processing and the
    result columns' processing, and the rows' type."""

    sql: bytes
    names: tuple[str, ...]
    defaults: Mapping[str, Any]
    binds: Mapping[str, Callable[[Any], Any]]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    row: Callable[..., tuple[Any, ...]]
    returns_rows: bool


_DRIVER_STATEMENTS: dict[int, tuple[Executable, _DriverStatement | None]] = {}
_PLACEHOLDER = re.compile(r"%\(([^)]+)\)s|%%")


def driver_rows(
    session: Session, statement: Executable, params: Mapping[str, Any]
) -> Sequence[Any]:
    """The rows of `statement` (a module-level Core statement, built once) run inside the
    session's transaction, as named tuples (the attributes and indexes of a Row): for an
    action that needs its Session (ORM) on some paths but sends its usual statements as Core
    (the gate); an action of Core statements only takes `Database.run_core`.

    On PostgreSQL it runs straight through the driver on the session's connection: compiled
    once (bind and result processing applied as SQLAlchemy does), sent with psycopg's raw
    cursor (no placeholder conversion per execution; prepared after a few uses). A Session's
    execution of a statement costs about twice the driver's own. A driver error is handled
    by SQLAlchemy's own handling (the same exception, the connection and the pool invalidated
    on a disconnect), so retries and 503s are unchanged. SQLite: the Session executes it."""
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        return session.execute(statement, params).all()
    known = _DRIVER_STATEMENTS.get(id(statement))
    if known is not None and known[0] is statement:
        compiled = known[1]
    else:
        compiled = _compile_for_driver(statement, dialect)
        _DRIVER_STATEMENTS[id(statement)] = (statement, compiled)
    if compiled is None:  # parameters expanded per execution (IN lists): SQLAlchemy's part
        return session.execute(statement, params).all()
    values = []
    for name in compiled.names:
        value = params[name] if name in params else compiled.defaults[name]
        process = compiled.binds.get(name)
        values.append(value if process is None else process(value))
    pooled = connection.connection
    driver: Any = pooled.driver_connection
    from psycopg import RawCursor

    cursor: Any = RawCursor(driver)
    try:
        cursor.execute(compiled.sql, values)
        rows = cursor.fetchall() if compiled.returns_rows else []
    except dialect.loaded_dbapi.Error as exc:
        connection._handle_dbapi_exception(exc, compiled.sql.decode(), values, cursor, None)
    finally:
        cursor.close()
    make = compiled.row
    if not compiled.processors:
        return [make(*row) for row in rows]
    result = []
    for row in rows:
        processed = list(row)
        for index, process in compiled.processors:
            processed[index] = process(processed[index])
        result.append(make(*processed))
    return result


def _compile_for_driver(statement: Executable, dialect: Any) -> _DriverStatement | None:
    compiled: Any = cast(Any, statement).compile(dialect=dialect)
    if compiled.escaped_bind_names or "POSTCOMPILE" in compiled.string:
        return None
    names: list[str] = []
    positions: dict[str, int] = {}

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in positions:
            names.append(name)
            positions[name] = len(names)
        return f"${positions[name]}"

    sql = _PLACEHOLDER.sub(placeholder, compiled.string)
    defaults = {
        name: bind.effective_value
        for name, bind in compiled.binds.items()
        if not bind.required and bind.callable is None
    }
    binds = {name: process for name, process in compiled._bind_processors.items() if process}
    columns: list[Any] = list(getattr(statement, "selected_columns", None) or ())
    if not columns:  # an INSERT, UPDATE or DELETE: its RETURNING columns, if any
        columns = list(getattr(statement, "exported_columns", None) or ())
    processors = []
    for index, column in enumerate(columns):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            processors.append((index, process))
    keys = [str(column.key) if column.key else f"column{i}" for i, column in enumerate(columns)]
    row: Callable[..., tuple[Any, ...]] = (
        namedtuple("DriverRow", keys, rename=True) if keys else lambda *values: values
    )
    return _DriverStatement(
        sql=sql.encode(),
        names=tuple(names),
        defaults=defaults,
        binds=binds,
        processors=tuple(processors),
        row=row,
        returns_rows=bool(columns),
    )
