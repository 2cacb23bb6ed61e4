"""Audit queries and inclusion proofs at N entries, on a PostgreSQL started here (fsync on).

    .venv/bin/python bench/audit_queries.py [--entries N] [--queries N]

The entries are loaded with COPY in the sealer's layout (entry bytes, leaf hash, the stored
upper tree nodes), not through HTTP: a year of entries from 1,000 actors, 20 actions, 50,000
runs and 5 tenants (a twentieth global). Each filter kind runs `--queries` times with varied
values through the same query the API runs (first page of 100, log order); the figure is its
p95. The same data is measured twice in one run: before migration 0029, with the query shape
of that time (a time window read through the time index and sorted), and after it (a window
reads only the blocks of the log whose recorded time range overlaps it, in log order).
Inclusion proofs are computed as the API does, from the stored nodes (one read).
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
from sqlalchemy import or_, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

from azdev_ica.auth.principal import Principal  # noqa: E402
from azdev_ica.auth.roles import Permission, Role  # noqa: E402
from azdev_ica.db import migrate  # noqa: E402
from azdev_ica.db.engine import Database  # noqa: E402
from azdev_ica.db.tables import AuditEntry, AuditNode  # noqa: E402
from azdev_ica.jobs.sealer import STORED_LEVEL, node_reader  # noqa: E402
from azdev_ica.ledger.entry import compose_entry  # noqa: E402
from azdev_ica.ledger.merkle import (  # noqa: E402
    CompactRange,
    GetNodes,
    inclusion_proof,
    leaf_hash,
    node_hash,
    stored_hash_index,
)
from azdev_ica.queries.audit import AuditFilter, entry_with_proof, query_entries  # noqa: E402
from bench.common import Figure, Sizes, percentile  # noqa: E402
from bench.ledger_throughput import BODY  # noqa: E402

YEAR = 2026
START = datetime(YEAR, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=364)
ACTIONS = [f"action.{n}" for n in range(20)]
TENANTS = ["ck", "ws", "sb", "to", "vu"]
BEFORE = "0028_gate"


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
        cursor.execute(
            "INSERT INTO azdev_audit_shard (year, origin, opened_at) VALUES (%s, %s, %s)",
            (YEAR, origin, START),
        )
        # A checkpoint row covering every entry, for the API's proof (its note is not signed
        # here: nothing in the measured path verifies it).
        cursor.execute(
            "INSERT INTO azdev_audit_checkpoint (year, size, root, note, key_name, key_id,"
            " signed_at) VALUES (%s, %s, %s, %s, 'bench', '00000000', %s)",
            (YEAR, entries, rng.root(), f"{origin}\n{entries}\n", START),
        )
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


def _query_before_0029(
    session: Session, *, principal: Principal, filters: AuditFilter, limit: int, cursor: None
) -> list[AuditEntry]:
    """The first page as queries.audit read it before 0029 (the baseline)."""
    query = select(AuditEntry)
    for column, value in (
        (AuditEntry.actor_id, filters.actor),
        (AuditEntry.action, filters.action),
        (AuditEntry.subject_type, filters.subject_type),
        (AuditEntry.subject_id, filters.subject_id),
        (AuditEntry.tenant, filters.tenant),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.time_from is not None:
        query = query.where(AuditEntry.time >= filters.time_from)
    if filters.time_to is not None:
        query = query.where(AuditEntry.time < filters.time_to)
    scope = principal.scope(Permission.AUDIT_READ)
    if scope is not None:
        query = query.where(AuditEntry.tenant.in_(sorted(scope)))
    if filters.time_from is not None or filters.time_to is not None:
        query = query.order_by(AuditEntry.year + 0, AuditEntry.idx + 0)
    else:
        query = query.order_by(AuditEntry.year, AuditEntry.idx)
    return list(session.scalars(query.limit(limit + 1)))


def measure_queries(
    db: Database, entries: int, queries: int, query: Callable[..., object] = query_entries
) -> dict[str, float]:
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
                query(session, principal=principal, filters=chosen, limit=100, cursor=None)
                times.append((time.perf_counter() - started) * 1000)
        results[name] = percentile(times, 0.95)
    return results


def _reader_before_0029(session: Session, year: int) -> GetNodes:
    """The node reader as it was before 0029 (the baseline): stored nodes in one read, the
    leaf hashes under the lower nodes in a second one."""

    def get_nodes(ids: list[tuple[int, int]]) -> list[bytes]:
        found: dict[tuple[int, int], bytes] = {}
        high = {stored_hash_index(*n): n for n in ids if n[0] >= STORED_LEVEL}
        if high:
            for seq, h in session.execute(
                select(AuditNode.seq, AuditNode.hash).where(
                    AuditNode.year == year, AuditNode.seq.in_(list(high))
                )
            ):
                found[high[seq]] = bytes(h)
        low = [n for n in ids if n[0] < STORED_LEVEL]
        if low:
            ranges = {(i << lv, (i + 1) << lv) for lv, i in low}
            leaves = {
                idx: bytes(leaf or b"")
                for idx, leaf in session.execute(
                    select(AuditEntry.idx, AuditEntry.leaf).where(
                        AuditEntry.year == year,
                        or_(*(AuditEntry.idx.between(f, e - 1) for f, e in ranges)),
                    )
                )
            }
            for lv, i in low:
                hashes = [leaves[j] for j in range(i << lv, (i + 1) << lv)]
                while len(hashes) > 1:
                    hashes = [node_hash(hashes[k], hashes[k + 1]) for k in range(0, len(hashes), 2)]
                found[(lv, i)] = hashes[0]
        return [found[n] for n in ids]

    return get_nodes


WARM_UP = 5  # proofs not timed: the first ones compile and prepare the statements, once


def measure_proofs(
    db: Database,
    entries: int,
    proofs: int,
    reader: Callable[[Session, int], GetNodes] = node_reader,
) -> float:
    """p95 in ms of an inclusion proof at size `entries`, read from the database."""
    rng = random.Random(7)
    times = []
    with db.read() as session:
        nodes = reader(session, YEAR)
        for _ in range(WARM_UP):
            inclusion_proof(rng.randrange(entries), entries, nodes)
        for _ in range(proofs):
            started = time.perf_counter()
            inclusion_proof(rng.randrange(entries), entries, nodes)
            times.append((time.perf_counter() - started) * 1000)
    return percentile(times, 0.95)


def measure_entry_proofs(db: Database, entries: int, proofs: int) -> float:
    """p95 in ms of what GET /audit/entry/{index} reads: `entry_with_proof` (the shard, the
    entry, the checkpoint that covers it and the proof) in its own read transaction."""
    rng = random.Random(11)
    auditor = Principal.with_role(
        kind="api_key", id="api_key:bench", name="bench", role=Role.AUDITOR, tenants=None
    )
    times = []
    for number in range(WARM_UP + proofs):
        started = time.perf_counter()
        with db.read() as session:
            found = entry_with_proof(
                session, principal=auditor, year=None, index=rng.randrange(entries)
            )
        if number >= WARM_UP:
            times.append((time.perf_counter() - started) * 1000)
        assert found.proof or entries == 1
    return percentile(times, 0.95)


def run(server: PgServer, entries: int, queries: int) -> tuple[dict[str, float], ...]:
    """(before 0029, after 0029, {"proof": p95}) on one data set."""
    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS audit")
        conn.execute("CREATE DATABASE audit")
    url = server.url("audit")
    db = Database.from_url(url)
    try:
        migrate.upgrade(db.engine, BEFORE)
        load(url, entries)
        before = measure_queries(db, entries, queries, _query_before_0029)
        migrate.upgrade(db.engine)
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE azdev_audit_entry")
            conn.exec_driver_sql("ANALYZE azdev_audit_time_block")
            conn.commit()
        after = measure_queries(db, entries, queries)
        proof = {
            "before": measure_proofs(db, entries, max(queries, 20), _reader_before_0029),
            "proof": measure_proofs(db, entries, max(queries, 20)),
            "entry": measure_entry_proofs(db, entries, max(queries, 20)),
        }
    finally:
        db.dispose()
    return before, after, proof


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    before, after, proof = run(server, sizes.audit_entries, sizes.queries)
    found = [
        Figure(
            f"Audit query p95 at {sizes.audit_entries:,} entries: {name}",
            f"{after[name]:.1f} ms",
            f"before 0029: {before[name]:.1f} ms",
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
            f"before 0029 (two reads): {proof['before']:.2f} ms",
            None,
            "< 2 ms",
            proof["proof"] < 2,
        )
    )
    found.append(
        Figure(
            f"GET audit/entry p95 at {sizes.audit_entries:,} entries (entry_with_proof)",
            f"{proof['entry']:.2f} ms",
            f"the proof alone {proof['proof']:.2f} ms",
            None,
            "",
            None,
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
    print(f"{'filter':>24}  {'before 0029':>11}  {'after':>7}")
    for name in after:
        print(f"{name:>24}  {before[name]:>11.1f}  {after[name]:>7.1f}")
    print(f"inclusion proof p95: {proof['proof']:.2f} ms (before 0029: {proof['before']:.2f} ms)")
    print(f"GET audit/entry (entry_with_proof) p95: {proof['entry']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
