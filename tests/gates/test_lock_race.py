"""Pipelines racing for one target over real HTTP: exactly one wins, every time."""

from __future__ import annotations

import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from typing import Any

import pytest
from sqlalchemy import func, select

from azdev_ica.db.tables import AuditInbox
from azdev_ica.services.runs import FinishRun, finish_run
from tests.gates.conftest import API, PIPELINE, new_run, use_policy
from tests.support.liveserver import LiveServer

RACERS = 8
TARGETS = list(product(("ck", "ws", "sb", "to", "vu"), ("development", "test", "staging")))[:10]


@pytest.fixture
def wide_app(settings: Any, clock: Any, ctx: Any, db_url: str) -> Any:
    from azdev_ica.api.app import create_app
    from azdev_ica.db.engine import Database

    database = Database.from_url(db_url, pool_size=RACERS)
    yield create_app(settings, database=database, clock=clock)
    database.dispose()


def _evaluate(url: str, key: str, run_key: str, barrier: threading.Barrier) -> str:
    request = urllib.request.Request(
        f"{url}{API}/gate/evaluate",
        data=json.dumps({"run_key": run_key}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    barrier.wait()
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(json.loads(response.read())["status"])


def _race_each(url: str, key: str, races: list[list[str]]) -> None:
    """Each group of runs evaluates the gate at once (released by a barrier): exactly one
    of them is allowed, the others wait in the queue."""
    with ThreadPoolExecutor(RACERS) as pool:
        for runs in races:
            barrier = threading.Barrier(RACERS)

            def race(run_key: str, barrier: threading.Barrier = barrier) -> str:
                return _evaluate(url, key, run_key, barrier)

            answers = list(pool.map(race, runs))
            assert sorted(answers) == ["allow"] + ["pending"] * (RACERS - 1)


def test_exactly_one_of_many_racing_runs_takes_the_lock_every_time(wide_app, ctx, make_key):
    use_policy(ctx, "gates:\n  require_tests: false\n  require_scan: false\n")
    key = make_key("azdev_devops")
    races = [
        [new_run(ctx, tenant=t, stage=s, coverage=None, scan_passed=None) for _ in range(RACERS)]
        for t, s in TARGETS
    ]
    server = LiveServer(wide_app).start()
    try:
        _race_each(server.url, key, races)
    finally:
        server.stop()
    with ctx.read() as session:
        acquired = session.scalar(
            select(func.count()).select_from(AuditInbox).where(AuditInbox.action == "lock.acquire")
        )
    assert acquired == len(TARGETS)


def test_exactly_one_of_many_racing_runs_takes_a_free_lock_every_time(wide_app, ctx, make_key):
    """The same, for targets whose lock row exists and is free (an earlier run held it and
    finished): the path where PostgreSQL locks the row in the statement that reads the
    gate's facts."""
    use_policy(ctx, "gates:\n  require_tests: false\n  require_scan: false\n")
    key = make_key("azdev_devops")
    earlier = [new_run(ctx, tenant=t, stage=s, coverage=None, scan_passed=None) for t, s in TARGETS]
    races = [
        [new_run(ctx, tenant=t, stage=s, coverage=None, scan_passed=None) for _ in range(RACERS)]
        for t, s in TARGETS
    ]
    server = LiveServer(wide_app).start()
    try:
        for run_key in earlier:
            assert _evaluate(server.url, key, run_key, threading.Barrier(1)) == "allow"
            finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key, "success"))
        _race_each(server.url, key, races)
    finally:
        server.stop()
    with ctx.read() as session:
        acquired = session.scalar(
            select(func.count()).select_from(AuditInbox).where(AuditInbox.action == "lock.acquire")
        )
    assert acquired == 2 * len(TARGETS)
