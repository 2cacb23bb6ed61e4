"""Fixtures for the operator commands: an empty instance (data directory + database, SQLite
or PostgreSQL), the same after `ica init`, and the app `ica serve` would build from it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from azdev_ica.api.app import create_app
from azdev_ica.cli.main import main
from azdev_ica.settings import Settings
from tests.conftest import EXAMPLE_POLICY

KEY_RE = re.compile(r"ica_[a-z2-7]{10}_[A-Za-z0-9_-]{43}")
RUNS = "/api/v1/azdev/runs"


@dataclass
class Instance:
    data_dir: Path
    database_url: str
    capsys: Any

    def run(self, *argv: str) -> tuple[int, str, str]:
        """Run `ica ARGV`; return the exit code, stdout and stderr."""
        self.capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    def init(self) -> tuple[int, str, str]:
        return self.run("init", "--policy", str(EXAMPLE_POLICY))


@pytest.fixture
def instance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty_db_url: str, capsys: Any
) -> Instance:
    """An empty instance: a data directory and an empty database (the default SQLite file
    under the data directory, or a PostgreSQL database named by ICA_DATABASE_URL)."""
    data_dir = tmp_path / "var"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICA_DATA_DIR", str(data_dir))
    for name in ("ICA_SECRET_KEY", "ICA_SECRET_KEY_FILE", "ICA_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    if empty_db_url.startswith("postgresql"):
        monkeypatch.setenv("ICA_DATABASE_URL", empty_db_url)
        url = empty_db_url
    else:
        url = f"sqlite:///{data_dir / 'ica.db'}"
    return Instance(data_dir=data_dir, database_url=url, capsys=capsys)


def _schema_at_head(request: pytest.FixtureRequest, instance: Instance) -> None:
    """Put the suite's migrated template in the instance's empty database (a file copy, or a
    PostgreSQL clone under the same name), as a migration job run before `ica init` would
    leave it: `ica init` then finds the schema at head and does the rest. Migrating from
    nothing is `TestInit`'s business (on `instance`), not every later command's."""
    if instance.database_url.startswith("sqlite"):
        database = instance.data_dir / "ica.db"
        instance.data_dir.mkdir(mode=0o700)
        shutil.copyfile(request.getfixturevalue("sqlite_template"), database)
        os.chmod(database, 0o600)
        return
    template = request.getfixturevalue("pg_template")
    name = instance.database_url.rsplit("/", 1)[1]
    admin = create_engine(request.getfixturevalue("pg_admin_url"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    finally:
        admin.dispose()


@pytest.fixture
def initialised(request: pytest.FixtureRequest, instance: Instance) -> tuple[Instance, str]:
    _schema_at_head(request, instance)
    code, out, _ = instance.init()
    assert code == 0
    keys = KEY_RE.findall(out)
    assert len(keys) == 1
    return instance, keys[0]


@pytest.fixture
def http(initialised: tuple[Instance, str]) -> Iterator[TestClient]:
    """The app as `ica serve` would build it, from the same environment."""
    app = create_app(Settings())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    app.state.ctx.db.dispose()
