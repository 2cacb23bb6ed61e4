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
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def _timed(request: urllib.request.Request, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, body
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
        record_event(
            ctx,
            principal=pipeline,
            command=RecordEvent(run.run_key, Phase.DEPLOY, data={"status": "succeeded"}),
        )


def _measure(url: str, folder: Path, requests: int, history: int) -> dict[str, list[float]]:
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
        gate = urllib.request.Request(  # noqa: S310
            f"{server.url}/api/v1/azdev/gate/evaluate",
            data=json.dumps({"run_key": run.run_key}).encode(),
            headers=headers,
            method="POST",
        )
        health = urllib.request.Request(f"{server.url}/health")  # noqa: S310
        with urllib.request.urlopen(gate, timeout=30) as response:  # noqa: S310
            assert json.loads(response.read())["status"] == "allow"
        _timed(health, 20)  # warm up both paths
        _timed(gate, 20)
        results = {"health": _timed(health, requests), "gate": _timed(gate, requests)}
    finally:
        server.stop()
        database.dispose()
    return results


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
