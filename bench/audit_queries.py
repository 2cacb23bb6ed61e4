"""Audit queries and inclusion proofs at N entries, on a PostgreSQL started here (fsync on).

    .venv/bin/python bench/audit_queries.py [--entries N] [--queries N]

The entries are loaded with COPY in the sealer's layout (entry bytes, leaf hash, the stored
upper tree nodes), not through HTTP: a year of entries from 1,000 actors, 20 actions, 50,000
runs and 5 tenants (a twentieth global). Each filter kind runs `--queries` times with varied
values through the same query the API runs (first page of 100, log order); the figure is its
p95. The same data is measured twice in one run: before migration 0026 (indexes on time,
subject and actor only) and after it (an index per filter ending in the log order).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

from azdev_ica.auth.principal import Principal  # noqa: E402
from azdev_ica.auth.roles import Role  # noqa: E402
from azdev_ica.db import migrate  # noqa: E402
from azdev_ica.db.engine import Database  # noqa: E402
from azdev_ica.jobs.sealer import STORED_LEVEL, node_reader  # noqa: E402
from azdev_ica.ledger.entry import compose_entry  # noqa: E402
from azdev_ica.ledger.merkle import CompactRange, inclusion_proof, leaf_hash  # noqa: E402
from azdev_ica.queries.audit import AuditFilter, query_entries  # noqa: E402
from bench.common import Figure, Sizes, percentile  # noqa: E402
from bench.ledger_throughput import BODY  # noqa: E402

YEAR = 2026
START = datetime(YEAR, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=364)
ACTIONS = [f"action.{n}" for n in range(20)]
TENANTS = ["ck", "ws", "sb", "to", "vu"]
BEFORE = "0025_firsthour"


def _row(index: int, entries: int) -> tuple[object, ...]:
    rng = random.Random(index)
    tenant = None if index % 20 == 0 else TENANTS[index % 5]
    return (
        START + SPAN * (index / entries),
        ACTIONS[int(rng.paretovariate(1.2)) % 20],
        f"api_key:k{int(rng.paretovariate(1.1)) % 1000}",
        "run" if index % 10 else "approval",
        f"ado:p:{rng.randrange(50_000)}",
        tenant,
    )


def load(url: str, entries: int) -> None:
    """`entries` entries and the stored tree nodes, with COPY."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    origin = f"bench.example/audit/{YEAR}"
    rng = CompactRange()
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY azdev_audit_entry (year, idx, entry, leaf, time, action, actor_kind, actor_id,"
            " subject_type, subject_id, tenant) FROM STDIN"
        ) as copy:
            nodes: list[tuple[int, int, bytes]] = []
            for index in range(entries):
                entry = compose_entry(BODY, index, origin)
                leaf = leaf_hash(entry)
                when, action, actor, subject_type, subject_id, tenant = _row(index, entries)
                copy.write_row(
                    (YEAR, index, entry, leaf, when, action, "api_key", actor, subject_type,
                     subject_id, tenant)
                )  # fmt: skip
                seq = 2 * index - index.bit_count()
                nodes.extend((YEAR, seq + lv, h) for lv, h in rng.append_upper(leaf, STORED_LEVEL))
        with cursor.copy("COPY azdev_audit_node (year, seq, hash) FROM STDIN") as copy:
            for row in nodes:
                copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE azdev_audit_entry")


def filter_kinds(entries: int) -> dict[str, Callable[[random.Random], AuditFilter]]:
    def window(rng: random.Random, days: int, recent: bool) -> tuple[datetime, datetime]:
        end = START + SPAN if recent else START + SPAN * rng.uniform(0.1, 0.9)
        return end - timedelta(days=days), end

    def run(rng: random.Random) -> str:
        return _row(rng.randrange(entries), entries)[4]  # type: ignore[return-value]

    def actor(rng: random.Random) -> str:
        return _row(rng.randrange(entries), entries)[2]  # type: ignore[return-value]

    return {
        "run": lambda r: AuditFilter(subject_type="run", subject_id=run(r)),
        "actor": lambda r: AuditFilter(actor=actor(r)),
        "action": lambda r: AuditFilter(action=r.choice(ACTIONS)),
        "rare action": lambda r: AuditFilter(action=ACTIONS[19]),
        "tenant": lambda r: AuditFilter(tenant=r.choice(TENANTS)),
        "subject type": lambda r: AuditFilter(subject_type="approval"),
        "recent 7-day window": lambda r: _timed_filter(*window(r, 7, True)),
        "older 7-day window": lambda r: _timed_filter(*window(r, 7, False)),
        "actor + 30-day window": lambda r: _timed_filter(*window(r, 30, False), actor=actor(r)),
        "tenant + action": lambda r: AuditFilter(tenant=r.choice(TENANTS), action=ACTIONS[3]),
        "run + action": lambda r: AuditFilter(
            subject_type="run", subject_id=run(r), action=ACTIONS[0]
        ),
        "no filter": lambda r: AuditFilter(),
    }


def _timed_filter(start: datetime, end: datetime, **more: str) -> AuditFilter:
    return AuditFilter(time_from=start, time_to=end, **more)  # type: ignore[arg-type]


def measure_queries(db: Database, entries: int, queries: int) -> dict[str, float]:
    """p95 in ms of each filter kind (a global auditor, and a tenant-scoped one on a tenant)."""
    auditor = Principal.with_role(
        kind="api_key", id="api_key:bench", name="bench", role=Role.AUDITOR, tenants=None
    )
    scoped = Principal.with_role(
        kind="api_key", id="api_key:ws", name="ws", role=Role.AUDITOR, tenants=frozenset({"ws"})
    )
    results = {}
    for name, make in filter_kinds(entries).items():
        rng = random.Random(name)
        times = []
        for number in range(queries):
            principal = scoped if name == "tenant" and number % 2 else auditor
            chosen = make(rng)
            with db.read() as session:
                started = time.perf_counter()
                query_entries(session, principal=principal, filters=chosen, limit=100, cursor=None)
                times.append((time.perf_counter() - started) * 1000)
        results[name] = percentile(times, 0.95)
    return results


def measure_proofs(db: Database, entries: int, proofs: int) -> float:
    """p95 in ms of an inclusion proof at size `entries`, read from the database."""
    rng = random.Random(7)
    times = []
    with db.read() as session:
        reader = node_reader(session, YEAR)
        for _ in range(proofs):
            started = time.perf_counter()
            inclusion_proof(rng.randrange(entries), entries, reader)
            times.append((time.perf_counter() - started) * 1000)
    return percentile(times, 0.95)


def run(server: PgServer, entries: int, queries: int) -> tuple[dict[str, float], ...]:
    """(before 0026, after 0026, {"proof": p95}) on one data set."""
    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS audit")
        conn.execute("CREATE DATABASE audit")
    url = server.url("audit")
    db = Database.from_url(url)
    try:
        migrate.upgrade(db.engine, BEFORE)
        load(url, entries)
        before = measure_queries(db, entries, queries)
        migrate.upgrade(db.engine)
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE azdev_audit_entry")
            conn.commit()
        after = measure_queries(db, entries, queries)
        proof = measure_proofs(db, entries, max(queries, 20))
    finally:
        db.dispose()
    return before, after, {"proof": proof}


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    before, after, proof = run(server, sizes.audit_entries, sizes.queries)
    found = [
        Figure(
            f"Audit query p95 at {sizes.audit_entries:,} entries: {name}",
            f"{after[name]:.1f} ms",
            f"before 0026: {before[name]:.1f} ms",
            None,
            "< 50 ms",
            after[name] < 50,
        )
        for name in after
    ]
    found.append(
        Figure(
            f"Inclusion proof p95 at {sizes.audit_entries:,} entries",
            f"{proof['proof']:.2f} ms",
            "",
            None,
            "< 2 ms",
            proof["proof"] < 2,
        )
    )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    server = PgServer.start(durable=True)
    try:
        before, after, proof = run(server, args.entries, args.queries)
    finally:
        server.stop()
    print(f"p95 ms at {args.entries} entries, {args.queries} queries per kind")
    print(f"{'filter':>24}  {'before 0026':>11}  {'after':>7}")
    for name in after:
        print(f"{name:>24}  {before[name]:>11.1f}  {after[name]:>7.1f}")
    print(f"inclusion proof p95: {proof['proof']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
