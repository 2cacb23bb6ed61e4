"""Helpers for tests of the ledger in a database: fill it through the services, seal it, and
tamper with it the way only a database superuser can (guards switched off)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.engine import Database
from azdev_ica.domain.runs import Phase, Provider
from azdev_ica.jobs.sealer import checkpoint_store, seal_now
from azdev_ica.services.runs import (
    FinishRun,
    RecordEvent,
    StartRun,
    finish_run,
    record_event,
    start_run,
)

PIPELINE = Principal.with_role(
    kind="api_key", id="apikey:ica_testtestte", name="ci", role=Role.DEVOPS, tenants=None
)


def start(ctx: Any, number: int, *, tenant: str = "ws", **extra: Any) -> str:
    outcome = start_run(
        ctx,
        principal=PIPELINE,
        command=StartRun(
            provider=Provider.AZURE,
            project_id="proj",
            run_id=str(number),
            pipeline_name="farmer-registry",
            tenant=tenant,
            stage="test",
            **extra,
        ),
    )
    return outcome.run.run_key


def activity(
    ctx: Any, runs: int, *, seal_every: int = 2, tenant: str = "ws", first: int = 1000
) -> list[str]:
    """`runs` runs (start, a build event, finish), sealed and signed every `seal_every` runs:
    several checkpoints, a few entries apart."""
    keys = []
    for number in range(runs):
        key = start(ctx, first + number, tenant=tenant, requested_for=f"user-{number % 3}")
        record_event(
            ctx,
            principal=PIPELINE,
            command=RecordEvent(
                run_key=key,
                phase=Phase.BUILD,
                event_id="build",
                data={"artifact_digest": "sha256:" + f"{number:02d}" * 32},
            ),
        )
        finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key=key, status="success"))
        keys.append(key)
        if number % seal_every == seal_every - 1:
            seal_now(ctx)
    seal_now(ctx)
    return keys


@contextmanager
def unguarded(database: Database, *tables: str) -> Iterator[Any]:
    """A connection on which UPDATE/DELETE on `tables` is no longer refused, as a superuser
    (PostgreSQL: DISABLE TRIGGER ALL) or the file's owner (SQLite: DROP TRIGGER) could do."""
    with database.engine.begin() as conn:
        for table in tables:
            if database.dialect == "postgresql":
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER ALL"))
            else:
                for verb in ("update", "delete", "replace"):
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))
        yield conn


def export_and_verify(
    ctx: Any, tmp_path: Path, year: int = 2026
) -> subprocess.CompletedProcess[str]:
    """Export the shard, unpack it, run its own verify.py in a fresh interpreter."""
    from azdev_ica.audit.export import export_bundle

    out = tmp_path / f"export-{year}.tar.gz"
    export_bundle(ctx.db, checkpoint_store(ctx.ledger), year=year, out=out)
    target = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(target, filter="data")
    bundle = target / f"ica-audit-{year}"
    return subprocess.run(
        [sys.executable, str(bundle / "verify.py"), str(bundle), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def with_ledger(ctx: Any, **changes: Any) -> Any:
    """The same service context with other ledger settings."""
    return dataclasses.replace(ctx, ledger=dataclasses.replace(ctx.ledger, **changes))
