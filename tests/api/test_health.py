"""Liveness and readiness, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from azdev_ica.api.app import create_app
from azdev_ica.db import migrate
from azdev_ica.db.engine import Database
from azdev_ica.settings import Settings

PROBLEM = "application/problem+json"


@pytest.fixture
def bare_client(tmp_path: Path, clock: Any) -> Iterator[Any]:
    """A client for an app whose database is given by the test (no policy applied)."""
    settings = Settings(data_dir=tmp_path, secret_key="s" * 48)
    opened: list[tuple[TestClient, Database]] = []

    def make(url: str) -> TestClient:
        database = Database.from_url(url)
        client = TestClient(
            create_app(settings, database=database, clock=clock), raise_server_exceptions=False
        )
        client.__enter__()
        opened.append((client, database))
        return client

    yield make
    for client, database in opened:
        client.__exit__(None, None, None)
        database.dispose()


def test_health_answers_without_credentials(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_needs_no_database(bare_client, tmp_path):
    # A database that cannot even be opened must not make the process look dead.
    response = bare_client(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}").get("/health")
    assert response.status_code == 200


def test_ready_when_migrated_with_a_policy(client, ctx):
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    with ctx.read() as session:
        active = ctx.policies.active(session).sha256
    assert body["checks"] == {
        "database": "ok",
        "migrations": "ok",
        "policy": active,
        "ledger": "ok",
    }
    # The policy's own record waits to be sealed (no sealer runs here), for less than a minute.
    assert body["ledger"]["state"] == "ok"
    assert body["ledger"]["backlog"]["count"] == 1


def not_ready(response: Any) -> dict[str, Any]:
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == "urn:ica:problem:not-ready"
    assert body["status"] == 503
    return body


def test_not_ready_without_a_policy(bare_client, db_url):
    body = not_ready(bare_client(db_url).get("/ready"))
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["migrations"] == "ok"
    assert "no policy" in body["checks"]["policy"]


def test_not_ready_on_an_empty_database(bare_client, empty_db_url):
    body = not_ready(bare_client(empty_db_url).get("/ready"))
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["migrations"].startswith("behind")
    assert body["checks"]["policy"].startswith("unreadable")


def test_not_ready_when_the_schema_is_not_at_head(bare_client, database, ctx):
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    assert not migrate.is_current(database.engine)
    body = not_ready(
        bare_client(database.engine.url.render_as_string(hide_password=False)).get("/ready")
    )
    assert body["checks"]["migrations"].startswith("behind")
    assert len(body["checks"]["policy"]) == 64  # the policy is there; the schema is not


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_not_ready_when_the_database_is_unreachable(bare_client, tmp_path, backend):
    if backend == "sqlite":
        # A directory where the database file should be: SQLite cannot open it.
        (tmp_path / "db-is-a-dir").mkdir()
        url = f"sqlite:///{tmp_path / 'db-is-a-dir'}"
    else:
        url = "postgresql+psycopg://postgres@127.0.0.1:1/ica"  # nothing listens on port 1
    body = not_ready(bare_client(url).get("/ready"))
    assert body["checks"]["database"].startswith("unreachable")
