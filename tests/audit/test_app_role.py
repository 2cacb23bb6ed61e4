"""PostgreSQL with the documented application role (`ica db grants`): the server works, and
the role itself cannot update, delete or truncate the ledger (refused by privilege, before any
trigger)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from azdev_ica.audit.verify import verify_ledger
from azdev_ica.auth.principal import Actor
from azdev_ica.db.engine import Database
from azdev_ica.db.grants import grant_statements
from azdev_ica.db.tables import APPEND_ONLY_TABLES
from azdev_ica.jobs.sealer import checkpoint_store, seal_now
from azdev_ica.services.ledger import erase_personal_data
from tests.audit.ledgerdb import activity, start

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture
def app_ctx(ctx: Any, db_url: str) -> Iterator[Any]:
    """The service context, connected as a fresh role with exactly the documented grants."""
    role = f"ica_app_{uuid.uuid4().hex[:8]}"
    with ctx.db.engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        for statement in grant_statements(role):
            conn.execute(text(statement))
    url = make_url(db_url).set(username=role)
    database = Database.from_url(url.render_as_string(hide_password=False), pool_size=2)
    yield dataclasses.replace(ctx, db=database)
    database.dispose()
    with ctx.db.engine.begin() as conn:
        conn.execute(text(f"DROP OWNED BY {role}"))
        conn.execute(text(f"DROP ROLE {role}"))


def test_the_application_role_runs_the_ledger_but_cannot_rewrite_it(app_ctx):
    activity(app_ctx, 2)
    start(app_ctx, 5, requested_for_email="ana@example.org")
    seal_now(app_ctx)
    assert verify_ledger(app_ctx.db, checkpoint_store(app_ctx.ledger)).ok
    erase_personal_data(
        app_ctx, actor=Actor(kind="operator", id="t"), kind="email", value="ana@example.org"
    )
    for table in APPEND_ONLY_TABLES:
        for statement in (
            f"UPDATE {table} SET {next(iter(APPEND_ONLY_TABLES[table]))[0]} = NULL",  # noqa: S608
            f"DELETE FROM {table}",  # noqa: S608
            f"TRUNCATE {table}",
        ):
            with (
                pytest.raises(DBAPIError, match="permission denied"),
                app_ctx.db.engine.begin() as conn,
            ):
                conn.execute(text(statement))
