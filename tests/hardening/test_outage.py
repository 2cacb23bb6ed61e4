"""Database outages are not client errors. On a PostgreSQL of its own (not the suite's
shared one): a stopped server answers 503 + Retry-After; a connection lost during COMMIT
never claims the request changed nothing; and a 4-second restart under concurrent pipeline
writes, made by the real `ica run` client against a real HTTP server, loses nothing and
doubles nothing, and the ledger verifies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text

from azdev_ica.auth.principal import Actor
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import PipelineEvent, PipelineRun
from tests.conftest import EXAMPLE_POLICY, bearer, example_policy
from tests.support.liveserver import LiveServer
from tests.support.pgserver import PgServer

OPERATOR = Actor(kind="operator", id="test")
START = {
    "provider": "ado",
    "project_id": "p1",
    "run_id": "1",
    "pipeline_name": "farmer-registry-ci",
    "tenant": "to",
    "stage": "production",
}


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PgServer]:
    server = PgServer.start()
    try:
        yield server
    finally:
        server.stop()


class Stack:
    def __init__(self, server: PgServer, tmp: Path, name: str) -> None:
        from azdev_ica.api.app import create_app
        from azdev_ica.clock import SystemClock
        from azdev_ica.db import migrate
        from azdev_ica.db.engine import Database
        from azdev_ica.ledger.keyfile import create_key_file
        from azdev_ica.services.apikeys import create_api_key
        from azdev_ica.services.context import LedgerConfig, ServiceContext
        from azdev_ica.services.policies import apply_policy
        from azdev_ica.settings import Settings

        admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.url = server.url(name)
        self.settings = Settings(
            data_dir=tmp,
            database_url=self.url,
            secret_key="s" * 48,
            api_key_touch_seconds=3600,
            ledger_sealer=False,
            jobs_scheduler=False,
        )
        create_key_file(
            self.settings.resolved_ledger_key_file(), f"{self.settings.public_host}/audit"
        )
        self.db = Database.from_url(self.url, pool_size=10)
        migrate.upgrade(self.db.engine)
        self.ctx = ServiceContext(
            db=self.db,
            clock=SystemClock(),
            pepper=self.settings.pepper(),
            ledger=LedgerConfig.from_settings(self.settings),
        )
        apply_policy(
            self.ctx, actor=OPERATOR, document=example_policy(), source=str(EXAMPLE_POLICY)
        )
        self.key = create_api_key(
            self.ctx, actor=OPERATOR, name="ci", role=Role.DEVOPS, tenants=None, expires_at=None
        ).secret
        self.app = create_app(self.settings, database=self.db, clock=self.ctx.clock)
        self.live = LiveServer(self.app).start()

    def close(self) -> None:
        self.live.stop()
        self.db.dispose()


@pytest.fixture
def stack(own_pg: PgServer, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    made = Stack(own_pg, tmp_path, f"ica_{request.node.name[:40].lower()}")
    try:
        yield made
    finally:
        made.close()


def _post(stack: Stack, path: str, body: dict[str, Any], key: str | None = None) -> Any:
    import httpx2

    headers = bearer(stack.key)
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx2.post(
        f"{stack.live.url}/api/v1/azdev{path}", json=body, headers=headers, timeout=60
    )


def test_a_stopped_database_is_a_503_with_retry_after(own_pg, stack):
    assert _post(stack, "/run/start", START).status_code == 201
    own_pg.restart(down_seconds=0)  # every pooled connection is now dead
    own_pg._run("pg_ctl", "-D", str(own_pg.data), "-m", "fast", "-w", "stop")
    try:
        answer = _post(stack, "/run/start", {**START, "run_id": "2"})
    finally:
        own_pg._pg_ctl_start()
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) > 0
    assert answer.json()["type"] == "urn:ica:problem:unavailable"
    assert "changed nothing" not in answer.json()["detail"]
    # Back up: the same write goes through.
    assert _post(stack, "/run/start", {**START, "run_id": "2"}).status_code == 201


def test_the_first_request_after_a_restart_goes_through(own_pg, stack):
    """No pool ping precedes a request: the pooled connections the restart killed fail their
    first statement, and ICA repeats the key look-up and the action once on a fresh
    connection, so a pipeline sees no 503 for a database that is back."""
    import httpx2

    warm = [_post(stack, "/run/start", {**START, "run_id": str(100 + n)}) for n in range(3)]
    assert [answer.status_code for answer in warm] == [201, 201, 201]
    own_pg.restart(down_seconds=0)  # every pooled connection is now dead
    read = httpx2.get(f"{stack.live.url}/api/v1/azdev/runs", headers=bearer(stack.key), timeout=60)
    assert read.status_code == 200, read.text
    own_pg.restart(down_seconds=0)
    started = _post(stack, "/run/start", {**START, "run_id": "200"})
    assert started.status_code == 201, started.text
    own_pg.restart(down_seconds=0)
    recorded = _post(stack, "/run/event", {"run_key": "ado:p1:200", "phase": "build"}, key="b")
    assert recorded.status_code == 201, recorded.text


def test_a_connection_lost_during_commit_never_claims_nothing_changed(own_pg, stack):
    """The server loses the connection just as the COMMIT is sent (its backend is ended
    from outside): ICA cannot know the outcome, and says so; the retry with the same
    Idempotency-Key answers with the one record."""
    import httpx2

    # The key's first use is recorded (a write) before any test write is watched.
    warm = httpx2.get(f"{stack.live.url}/api/v1/azdev/runs", headers=bearer(stack.key), timeout=60)
    assert warm.status_code == 200
    killer = create_engine(stack.url, isolation_level="AUTOCOMMIT")
    armed = {"once": True}

    @event.listens_for(stack.db.engine, "commit")
    def _lose_connection(conn: Any) -> None:
        if not armed["once"] or not conn.get_execution_options().get("ica_write"):
            return
        armed["once"] = False
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with killer.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})

    try:
        lost = _post(stack, "/run/start", {**START, "run_id": "7"}, key="start-7")
        again = _post(stack, "/run/start", {**START, "run_id": "7"}, key="start-7")
    finally:
        event.remove(stack.db.engine, "commit", _lose_connection)
        killer.dispose()
    assert lost.status_code == 503, lost.text
    assert lost.json()["outcome"] == "unknown"
    assert "changed nothing" not in lost.json()["detail"]
    assert "Idempotency-Key" in lost.json()["detail"]
    assert int(lost.headers["retry-after"]) > 0
    assert again.status_code in (200, 201), again.text
    with stack.ctx.read() as session:
        assert session.scalar(select(func.count()).select_from(PipelineRun)) == 1


PIPELINES = 8
RUNS_EACH = 5
PHASES = ("build", "test", "scan")


def test_a_database_restart_loses_no_pipeline_step(own_pg, stack, monkeypatch, capsys):
    from azdev_ica.audit.replay import replay_ledger
    from azdev_ica.audit.verify import verify_ledger
    from azdev_ica.cli.main import main
    from azdev_ica.jobs.sealer import checkpoint_store, seal_now

    monkeypatch.setenv("ICA_URL", stack.live.url)
    monkeypatch.setenv("ICA_TOKEN", stack.key)
    codes: list[tuple[list[str], int]] = []
    progress = threading.Semaphore(0)
    lock = threading.Lock()

    def step(argv: list[str]) -> None:
        code = main(["run", *argv, "--timeout", "60"])
        with lock:
            codes.append((argv, code))
        progress.release()

    def pipeline(number: int) -> None:
        for run in range(RUNS_EACH):
            run_id = str(number * 100 + run)
            run_key = f"ado:outage:{run_id}"
            step(
                ["start", "--provider", "ado", "--project-id", "outage", "--run-id", run_id,
                 "--pipeline-name", f"pipeline-{number}", "--tenant", "to",
                 "--stage", "production"]
            )  # fmt: skip
            for phase in PHASES:
                step(
                    ["event", phase, "--run-key", run_key, "--event-id", f"{run_id}-{phase}",
                     "--data", "{}" if phase == "build" else '{"passed": true}']
                )  # fmt: skip
            step(["finish", "--run-key", run_key, "--status", "success"])

    threads = [threading.Thread(target=pipeline, args=(n,)) for n in range(PIPELINES)]
    for thread in threads:
        thread.start()
    for _ in range(PIPELINES):  # every pipeline is under way
        progress.acquire()
    own_pg.restart(down_seconds=4)
    for thread in threads:
        thread.join()
    capsys.readouterr()

    steps = PIPELINES * RUNS_EACH * (2 + len(PHASES))
    failed = [(argv, code) for argv, code in codes if code != 0]
    assert failed == []
    assert len(codes) == steps
    with stack.ctx.read() as session:
        runs = session.execute(select(PipelineRun.run_key, PipelineRun.status)).all()
        events = session.execute(
            select(PipelineEvent.event_id, func.count()).group_by(PipelineEvent.event_id)
        ).all()
    assert len(runs) == PIPELINES * RUNS_EACH
    assert {status for _, status in runs} == {"success"}
    assert len(events) == PIPELINES * RUNS_EACH * len(PHASES)
    assert {count for _, count in events} == {1}  # nothing doubled
    seal_now(stack.ctx)
    assert verify_ledger(stack.db, checkpoint_store(stack.ctx.ledger)).ok
    replayed = replay_ledger(stack.db)
    assert replayed.ok, replayed.text()
