"""Throughput of `run/event` appends through the service layer on PostgreSQL, against raw
INSERTs of the same rows into the same server, from one run.

    make bench            # or: .venv/bin/python bench/run_event_throughput.py [--events N]

Both sides commit once per event (a pipeline's event is one request, one transaction) on a
PostgreSQL started here with fsync on. Each event carries an Idempotency-Key, as `ica run
event` sends it. The raw side inserts exactly the rows the service writes for an event (the
event row, its audit inbox record and the idempotency record) with prepared statements and
nothing else: no reads, no validation, no ORM. The ratio is the cost of the write path.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

from azdev_ica.auth.principal import Actor, Principal  # noqa: E402
from azdev_ica.auth.roles import Role  # noqa: E402
from azdev_ica.clock import SystemClock  # noqa: E402
from azdev_ica.db import migrate  # noqa: E402
from azdev_ica.db.engine import Database  # noqa: E402
from azdev_ica.domain.runs import Phase, Provider  # noqa: E402
from azdev_ica.services.context import ServiceContext  # noqa: E402
from azdev_ica.services.idempotency import IdempotencyRequest  # noqa: E402
from azdev_ica.services.policies import apply_policy  # noqa: E402
from azdev_ica.services.runs import RecordEvent, StartRun, record_event, start_run  # noqa: E402
from bench.common import Figure, Sizes, ica_serve  # noqa: E402
from bench.load import Request, saturation  # noqa: E402


def _service_side(url: str, events: int, threads: int) -> float:
    db = Database.from_url(url, pool_size=threads)
    migrate.upgrade(db.engine)
    ctx = ServiceContext(db=db, clock=SystemClock(), pepper=b"p" * 32)
    operator = Actor(kind="operator", id="bench")
    apply_policy(
        ctx,
        actor=operator,
        document=(ROOT / "examples" / "policy.yaml").read_text(),
        source="examples/policy.yaml",
    )
    principal = Principal.with_role(
        kind="apikey", id="bench", name="bench", role=Role.DEVOPS, tenants=None
    )
    run_keys = []
    for worker in range(threads):
        outcome = start_run(
            ctx,
            principal=principal,
            command=StartRun(
                provider=Provider.AZURE,
                project_id="bench",
                run_id=str(1000 + worker),
                pipeline_name="bench",
                tenant="ws",
                stage="test",
            ),
        )
        run_keys.append(outcome.run.run_key)

    def work(worker: int) -> None:
        for i in range(events // threads):
            data = {"passed": True, "coverage_percent": 87.5, "total": 420, "failed": 0}
            record_event(
                ctx,
                principal=principal,
                command=RecordEvent(
                    run_key=run_keys[worker], phase=Phase.TEST, event_id=f"e{i}", data=data
                ),
                idempotency=IdempotencyRequest.of(
                    principal=principal.id,
                    key=uuid.uuid4().hex,
                    operation="run.event",
                    body={"run_key": run_keys[worker], "phase": "test", "data": data},
                ),
            )

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    elapsed = time.perf_counter() - started
    db.dispose()
    return (events // threads) * threads / elapsed


def _raw_side(url: str, events: int, threads: int) -> float:
    """The same three rows per event, one commit per event, straight through psycopg."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        run_pks = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM azdev_pipeline_run ORDER BY id LIMIT %s", (threads,)
            ).fetchall()
        ]
    data = json.dumps({"coverage_percent": 87.5, "failed": 0, "passed": True, "total": 420})
    reference = json.dumps({"event_id": "e", "run_key": "ado:bench:1000"})

    def work(worker: int) -> None:
        with psycopg.connect(conninfo) as conn:
            for i in range(events // threads):
                now = datetime.now(UTC)
                record = json.dumps(
                    {"action": "run.event", "at": now.isoformat(), "data": data, "i": i},
                    separators=(",", ":"),
                    sort_keys=True,
                )
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO azdev_pipeline_event (run_pk, event_id, attempt, phase, "
                        "occurred_at, recorded_at, data) VALUES (%s, %s, 1, 'test', %s, %s, %s)",
                        (run_pks[worker], f"raw{i}-{uuid.uuid4().hex[:8]}", now, now, data),
                        prepare=True,
                    )
                    conn.execute(
                        "INSERT INTO azdev_audit_inbox (txid, created_at, action, actor_kind, "
                        "actor_id, subject_type, subject_id, tenant, body) VALUES "
                        "(pg_current_xact_id()::text::bigint, %s, 'run.event', 'apikey', "
                        "'bench', 'run', %s, 'ws', %s)",
                        (now, str(run_pks[worker]), record.encode()),
                        prepare=True,
                    )
                    conn.execute(
                        "INSERT INTO azdev_idempotency (principal, idem_key, operation, "
                        "fingerprint, status_code, response, created_at) VALUES "
                        "('bench', %s, 'run.event', %s, 201, %s, %s)",
                        (uuid.uuid4().hex, "f" * 64, reference, now),
                        prepare=True,
                    )

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    elapsed = time.perf_counter() - started
    return (events // threads) * threads / elapsed


@dataclass(frozen=True)
class OverHttp:
    """POST run/event over HTTP: events per second, and the server's CPU per request."""

    rate: float
    cpu_ms: float
    # GET /health from the same clients on the same server: what a request that touches no
    # database reaches, the most any endpoint of this server could.
    health_rate: float


def _http_side(
    server: PgServer, database: str, events: int, threads: int, workers: int = 1
) -> OverHttp:
    """`POST run/event` over HTTP to `ica serve` as shipped (one worker, sealer and jobs on),
    each event with its own Idempotency-Key as `ica run event` sends it; `threads` keep-alive
    clients sending back to back. The server's CPU (all its threads, the sealer's included)
    is read from /proc before and after."""
    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database}")
    with ica_serve(server.url(database), args=("--workers", str(workers))) as served:
        headers = {
            "Authorization": f"Bearer {served.token}",
            "Content-Type": "application/json",
        }

        def post(connection: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> int:
            connection.request(
                "POST",
                path,
                json.dumps(body).encode(),
                {**headers, "Idempotency-Key": uuid.uuid4().hex},
            )
            answer = connection.getresponse()
            answer.read()
            return answer.status

        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
        for worker in range(threads):
            start = {
                "provider": "ado", "project_id": "bench", "run_id": str(1000 + worker),
                "pipeline_name": "bench", "tenant": "ws", "stage": "test",
            }  # fmt: skip
            if post(connection, "/api/v1/azdev/run/start", start) != 201:
                raise RuntimeError("run/start failed")
        connection.close()

        def work(worker: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
            data = {"passed": True, "coverage_percent": 87.5, "total": 420, "failed": 0}
            for i in range(events // threads):
                body = {
                    "run_key": f"ado:bench:{1000 + worker}", "phase": "test",
                    "event_id": f"e{i}", "data": data,
                }  # fmt: skip
                if post(connection, "/api/v1/azdev/run/event", body) != 201:
                    raise RuntimeError("run/event failed")
            connection.close()

        sent = (events // threads) * threads
        cpu_before = served.cpu_seconds()
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        elapsed = time.perf_counter() - started
        cpu = served.cpu_seconds() - cpu_before
        health = saturation(served.base, Request("GET", "/health"), clients=threads, total=sent)
    return OverHttp(sent / elapsed, cpu / sent * 1000, health)


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    found = []
    for threads in sizes.threads:
        name = f"run_event_{threads}"
        with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        url = server.url(name)
        service = _service_side(url, sizes.events, threads)
        raw = _raw_side(url, sizes.events, threads)
        found.append(
            Figure(
                f"run/event through the service, {threads} thread(s)",
                f"{service:.0f} events/s",
                f"raw prepared INSERTs {raw:.0f}/s",
                service / raw,
                ">= 0.5",
                service / raw >= 0.5,
            )
        )
        # The smoke run proves each HTTP side once (each server start costs seconds).
        if sizes.name != "smoke" or threads == sizes.threads[0]:
            over_http = _http_side(server, f"{name}_http", sizes.events, threads)
            found.append(
                Figure(
                    f"POST run/event over HTTP to `ica serve`, {threads} client(s)",
                    f"{over_http.rate:.0f} events/s ({over_http.cpu_ms:.1f} ms server CPU each)",
                    f"raw prepared INSERTs {raw:.0f}/s",
                    over_http.rate / raw,
                    ">= 0.5",
                    over_http.rate / raw >= 0.5,
                )
            )
            found.append(
                Figure(
                    f"The HTTP floor: GET /health from the same {threads} client(s), same "
                    "server (no database)",
                    f"{over_http.health_rate:.0f}/s (run/event "
                    f"{over_http.rate / over_http.health_rate:.2f} of it)",
                    f"raw prepared INSERTs {raw:.0f}/s",
                    over_http.health_rate / raw,
                    "the most run/event over HTTP could reach",
                    None,
                )
            )
        if threads > 1:
            # The raw baseline's threads use both cores; one server process (the GIL) uses
            # one. The same clients against `--workers 2`, one process per core.
            workers = _http_side(server, f"{name}_http2", sizes.events, threads, workers=2)
            found.append(
                Figure(
                    f"POST run/event over HTTP to `ica serve --workers 2`, {threads} client(s)",
                    f"{workers.rate:.0f} events/s ({workers.cpu_ms:.1f} ms server CPU each)",
                    f"raw prepared INSERTs {raw:.0f}/s",
                    workers.rate / raw,
                    ">= 0.5",
                    workers.rate / raw >= 0.5,
                )
            )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    server = PgServer.start(durable=True)
    try:
        print(f"PostgreSQL with fsync on; {args.events} events per measurement")
        print(
            f"{'threads':>7}  {'service ev/s':>12}  {'HTTP ev/s':>9}  {'CPU ms':>6}  "
            f"{'raw ev/s':>10}  {'ratio':>6}  {'HTTP':>6}"
        )
        for number, threads in enumerate(args.threads):
            url = server.url()
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE bench{number}")
            url = server.url(f"bench{number}")
            service = _service_side(url, args.events, threads)
            raw = _raw_side(url, args.events, threads)
            over_http = _http_side(server, f"bench{number}_http", args.events, threads)
            print(
                f"{threads:>7}  {service:>12.0f}  {over_http.rate:>9.0f}  "
                f"{over_http.cpu_ms:>6.2f}  {raw:>10.0f}  {service / raw:>6.2f}  "
                f"{over_http.rate / raw:>6.2f}"
            )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
