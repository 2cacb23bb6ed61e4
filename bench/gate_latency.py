"""Latency of a gate evaluation over real HTTP, against a bare `GET /health` to the same
server in the same run.

    .venv/bin/python bench/gate_latency.py [--requests N] [--sqlite] [--history N]

A server (uvicorn, one process, the background sealer on) runs on a PostgreSQL started here
(fsync on), or on SQLite. A run of Tonga's development stage has reported its tests and scan; the
same pipeline asks the gate N times (each answer is a full evaluation: the run, its events,
its approval and override, the window, the lock taken or renewed, the decision row and its
audit entry, all in one transaction). The figure that matters is the gate's median and p95
against the health check's: what the gate costs over the HTTP round trip itself.

`--history N` first records N earlier deployments across the fleet (runs with a succeeded
`deploy` event, through the same services), to show how the gate's cost grows with the
deployment history the promotion and rollback rules read.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from tests.support.liveserver import LiveServer  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

from azdev_ica.api.app import create_app  # noqa: E402
from azdev_ica.auth.principal import Actor, Principal  # noqa: E402
from azdev_ica.auth.roles import Role  # noqa: E402
from azdev_ica.db import migrate  # noqa: E402
from azdev_ica.db.engine import Database  # noqa: E402
from azdev_ica.domain.runs import Phase, Provider  # noqa: E402
from azdev_ica.ledger.keyfile import create_key_file  # noqa: E402
from azdev_ica.services.apikeys import create_api_key  # noqa: E402
from azdev_ica.services.policies import apply_policy  # noqa: E402
from azdev_ica.services.runs import RecordEvent, StartRun, record_event, start_run  # noqa: E402
from azdev_ica.settings import Settings  # noqa: E402
from bench.common import Figure, Sizes, percentile  # noqa: E402
from bench.load import Request, open_loop, saturation  # noqa: E402


def _timed(base: str, request: Request, count: int) -> list[float]:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=30)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            connection.request(request.method, request.path, request.body, request.headers or {})
            response = connection.getresponse()
            body = response.read()
            times.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, body
    finally:
        connection.close()
    return times


def _history(ctx: Any, pipeline: Principal, count: int) -> None:
    tenants = ("ck", "ws", "sb", "to", "vu")
    stages = ("development", "test", "staging", "production")
    for number in range(count):
        tenant, stage = tenants[number % 5], stages[(number // 5) % 4]
        run = start_run(
            ctx,
            principal=pipeline,
            command=StartRun(
                provider=Provider.AZURE,
                project_id="history",
                run_id=str(number + 1),
                pipeline_name="history",
                tenant=tenant,
                stage=stage,
                artifact_digest=f"sha256:{number:064x}",
            ),
        ).run
        for phase, data in ((Phase.BUILD, {}), (Phase.DEPLOY, {"status": "succeeded"})):
            record_event(
                ctx, principal=pipeline, command=RecordEvent(run.run_key, phase, data=data)
            )


@contextmanager
def serving(url: str, folder: Path, history: int) -> Iterator[tuple[str, Request, Request, Engine]]:
    """A server with a run ready for the gate: (base URL, the gate's request, health's, the
    server's engine)."""
    settings = Settings(data_dir=folder, database_url=url, secret_key="b" * 48)
    create_key_file(settings.resolved_ledger_key_file(), f"{settings.public_host}/audit")
    database = Database.from_url(url, pool_size=5)
    migrate.upgrade(database.engine)
    app = create_app(settings, database=database)
    ctx = app.state.ctx
    operator = Actor(kind="operator", id="bench")
    document = (ROOT / "examples" / "policy.yaml").read_text()
    apply_policy(ctx, actor=operator, document=document, source="examples/policy.yaml")
    pipeline = Principal.with_role(
        kind="api_key", id="api_key:bench", name="bench", role=Role.DEVOPS, tenants=None
    )
    _history(ctx, pipeline, history)
    run = start_run(
        ctx,
        principal=pipeline,
        command=StartRun(
            provider=Provider.AZURE,
            project_id="bench",
            run_id="1",
            pipeline_name="bench",
            tenant="to",
            # The example policy's promotion rules apply: development is the chain's first
            # stage (a later one would need the stage before and its sign-offs first).
            stage="development",
            artifact_digest="sha256:" + "ab" * 32,
        ),
    ).run
    for phase, data in (
        (Phase.BUILD, {"artifact_digest": "sha256:" + "ab" * 32}),
        (Phase.TEST, {"passed": True, "coverage_percent": 91.5}),
        (Phase.SCAN, {"passed": True, "findings": {"critical": 0, "high": 0}}),
    ):
        record_event(ctx, principal=pipeline, command=RecordEvent(run.run_key, phase, data=data))
    key = create_api_key(
        ctx, actor=operator, name="bench", role=Role.DEVOPS, tenants=None, expires_at=None
    ).secret
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    server = LiveServer(app).start()
    try:
        gate = Request(
            "POST",
            "/api/v1/azdev/gate/evaluate",
            json.dumps({"run_key": run.run_key}).encode(),
            headers,
        )
        parts = urlsplit(server.url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port or 80)
        connection.request(gate.method, gate.path, gate.body, headers)
        answer = json.loads(connection.getresponse().read())
        connection.close()
        if answer.get("status") != "allow":  # a denial would measure the wrong path
            raise RuntimeError(f"the gate did not allow the bench's run: {answer}")
        yield server.url, gate, Request("GET", "/health"), database.engine
    finally:
        server.stop()
        database.dispose()


def _measure(url: str, folder: Path, requests: int, history: int) -> dict[str, list[float]]:
    with serving(url, folder, history) as (base, gate, health, _engine):
        _timed(base, health, 20)  # warm up both paths
        _timed(base, gate, 20)
        return {"health": _timed(base, health, requests), "gate": _timed(base, gate, requests)}


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    """Saturation (4 keep-alive clients) and an open-loop offered load, gate beside health,
    with a deployment history of a few hundred runs."""
    database = _database(server, "gate")
    found = []
    with (
        tempfile.TemporaryDirectory(prefix="ica-bench-") as folder,
        serving(database, Path(folder), history=min(200, sizes.gate_requests)) as served,
    ):
        base, gate, health, engine = served
        saturation(base, health, clients=4, total=20)  # warm up
        saturation(base, gate, clients=4, total=20)
        health_rate = saturation(base, health, clients=4, total=sizes.gate_requests)
        gate_rate = saturation(base, gate, clients=4, total=sizes.gate_requests)
        ratio = gate_rate / health_rate
        trips = round_trips(engine, lambda: _timed(base, gate, 10)) / 10
        found.append(
            Figure(
                "Gate evaluations at saturation (4 clients, one server process)",
                f"{gate_rate:.0f}/s ({trips:g} round trips each)",
                f"GET /health {health_rate:.0f}/s",
                ratio,
                ">= 0.5",
                ratio >= 0.5,
            )
        )
        rate, seconds = sizes.open_loop_rate, sizes.open_loop_seconds
        health_p99 = percentile(open_loop(base, health, rate=rate, seconds=seconds), 0.99)
        gate_p99 = percentile(open_loop(base, gate, rate=rate, seconds=seconds), 0.99)
        found.append(
            Figure(
                f"Gate p99, open loop at {rate:.0f}/s for {seconds:.0f} s",
                f"{gate_p99:.1f} ms",
                f"health p99 {health_p99:.1f} ms",
                None,
                "< 25 ms (at 500/s)",
                gate_p99 < 25,
            )
        )
    return found


def round_trips(engine: Engine, work: Callable[[], object]) -> int:
    """How many statements `engine` sends to the database while `work` runs (each one is a
    round trip; BEGIN and COMMIT are not counted)."""
    count = 0

    def counted(*_: object) -> None:
        nonlocal count
        count += 1

    event.listen(engine, "before_cursor_execute", counted)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", counted)
    return count


def _database(server: PgServer, name: str) -> str:
    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)


def _summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 2),
        "max_ms": round(ordered[-1], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--history", type=int, default=0, help="earlier deployments to record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ica-bench-") as folder:
        if args.sqlite:
            results = _measure(
                f"sqlite:///{folder}/ica.db", Path(folder), args.requests, args.history
            )
            backend = "SQLite"
        else:
            server = PgServer.start(durable=True)
            try:
                results = _measure(server.url(), Path(folder), args.requests, args.history)
            finally:
                server.stop()
            backend = "PostgreSQL (fsync on)"
    health, gate = _summary(results["health"]), _summary(results["gate"])
    print(
        f"{backend}, {args.requests} sequential requests each, one client, "
        f"{args.history} earlier deployments"
    )
    print(f"{'':>16}  {'median ms':>9}  {'p95 ms':>7}  {'max ms':>7}")
    for name, row in (("GET /health", health), ("gate/evaluate", gate)):
        print(f"{name:>16}  {row['median_ms']:>9}  {row['p95_ms']:>7}  {row['max_ms']:>7}")
    print(f"gate median / health median: {gate['median_ms'] / health['median_ms']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
