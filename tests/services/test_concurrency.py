"""Concurrent identical writes never duplicate: 50 threads post the same start at once."""

from __future__ import annotations

import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.liveserver import LiveServer

THREADS = 50
BODY = {
    "provider": "ado",
    "project_id": "6f2d1c9e-0000-4000-8000-000000000001",
    "run_id": "4711",
    "pipeline_name": "farmer-registry",
    "tenant": "ws",
    "stage": "production",
}


@pytest.fixture
def wide_app(settings: Any, clock: Any, ctx: Any, db_url: str) -> Any:
    """The app over its own pool, wide enough that all 50 requests hit the database at once."""
    from azdev_ica.api.app import create_app
    from azdev_ica.db.engine import Database

    database = Database.from_url(db_url, pool_size=THREADS)
    yield create_app(settings, database=database, clock=clock)
    database.dispose()


def _post(url: str, key: str, barrier: threading.Barrier) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/api/v1/azdev/run/start",
        data=json.dumps(BODY).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    barrier.wait()
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def test_fifty_simultaneous_starts_make_exactly_one_run(wide_app, make_key, ctx):
    from azdev_ica.db.tables import AuditInbox, PipelineRun

    key = make_key("azdev_devops")
    server = LiveServer(wide_app).start()
    try:
        barrier = threading.Barrier(THREADS)
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(lambda _: _post(server.url, key, barrier), range(THREADS)))
    finally:
        server.stop()

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * (THREADS - 1) + [201]
    assert {body["run_key"] for _, body in answers} == {
        "ado:6f2d1c9e-0000-4000-8000-000000000001:4711"
    }
    with ctx.read() as session:
        assert session.scalar(select(func.count()).select_from(PipelineRun)) == 1
        starts = session.scalar(
            select(func.count()).select_from(AuditInbox).where(AuditInbox.action == "run.start")
        )
    assert starts == 1
