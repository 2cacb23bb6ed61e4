"""The embedded database is private to its owner, whatever the umask `ica init` runs under;
failed statements are logged without the values they carried."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.conftest import EXAMPLE_POLICY


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_ica_init_makes_a_private_data_directory_and_database(tmp_path, umask):
    data_dir = tmp_path / "fresh" / "var"
    env = {
        **os.environ,
        "ICA_DATA_DIR": str(data_dir),
        "ICA_DATABASE_URL": "",
        "ICA_SECRET_KEY": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "azdev_ica.cli.main", "init", "--policy", str(EXAMPLE_POLICY)],
        env=env,
        umask=umask,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir.parent) == 0o700  # created for it, so private too
    assert _mode(data_dir / "ica.db") == 0o600
    for companion in ("ica.db-wal", "ica.db-shm"):
        if (data_dir / companion).exists():
            assert _mode(data_dir / companion) == 0o600, companion


def test_a_database_error_is_logged_without_its_parameters(db_url, caplog):
    from azdev_ica.db.engine import make_engine

    engine = make_engine(db_url)
    secret = "ica_secretvalue_never_in_a_log"
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE leak_probe (id INTEGER PRIMARY KEY, v TEXT)"))
            conn.execute(text("INSERT INTO leak_probe VALUES (1, 'x')"))
        with (
            caplog.at_level(logging.DEBUG),
            pytest.raises(IntegrityError) as raised,
            engine.begin() as conn,
        ):
            conn.execute(text("INSERT INTO leak_probe VALUES (1, :v)"), {"v": secret})
        logging.getLogger("probe").error("failed", exc_info=raised.value)
    finally:
        engine.dispose()
    assert secret not in str(raised.value)
    assert secret not in caplog.text
    assert "hidden due to hide_parameters" in str(raised.value)
