"""The audit ledger's speed, from one run on a PostgreSQL started here with fsync on:

1. sealing: inbox records turned into entries (with their leaf hash), the upper tree nodes and
   a tree head per batch (and the time blocks and checkpoints), against raw batched INSERTs of
   exactly the rows the sealer wrote, every column, into copies of its tables with the same
   indexes (same batch size, one commit per batch); goal: at least half the raw rate. Raw
   INSERTs of the entry bytes alone into a bare two-column table are measured beside it (the
   baseline of earlier runs: it leaves out the columns and indexes audit queries need);
2. `verify.py` over a bundle of `--bundle-entries` entries (default 1,000,000), with and
   without `cryptography`, against bare hashlib SHA-256 over the same leaves and nodes;
   goal: at least half the bare-hashing rate;
3. inclusion proofs read from the database at that size (one read: the stored nodes by key and
   at most 2 * 64 leaf hashes).

    .venv/bin/python bench/ledger_throughput.py [--seal-entries N] [--bundle-entries N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import rfc8785  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

from azdev_ica.audit.export import verifier_source  # noqa: E402
from azdev_ica.clock import SystemClock  # noqa: E402
from azdev_ica.db import migrate  # noqa: E402
from azdev_ica.db.engine import Database  # noqa: E402
from azdev_ica.db.tables import AUDIT_BLOCK_BITS  # noqa: E402
from azdev_ica.jobs.sealer import STORED_LEVEL, node_reader, seal_now  # noqa: E402
from azdev_ica.ledger import offline_verify  # noqa: E402
from azdev_ica.ledger.entry import compose_entry  # noqa: E402
from azdev_ica.ledger.keyfile import create_key_file  # noqa: E402
from azdev_ica.ledger.merkle import (  # noqa: E402
    CompactRange,
    inclusion_proof,
    leaf_hash,
)
from azdev_ica.ledger.note import Checkpoint, Signer, sign_checkpoint  # noqa: E402
from azdev_ica.services.context import LedgerConfig, ServiceContext  # noqa: E402
from bench.common import Figure, Sizes, fresh_database  # noqa: E402

BATCH = 1000
BODY = rfc8785.dumps(
    {
        "action": "run.event",
        "actor": {"id": "apikey:ica_benchbench", "kind": "api_key", "role": "azdev_devops"},
        "data": {"attempt": 1, "data": {"coverage_percent": 87.5, "passed": True}, "phase": "test"},
        "subject": {"id": "ado:6c3f0e1a-1111-4c2b-9d1e-0123456789ab:4711", "type": "run"},
        "tenant": "ws",
        "time": "2026-11-02T09:00:00.000000Z",
    }
)


# The sealer's tables, each with the column that places a row in the log (to copy each round's
# new rows, batch by batch, into a copy of the table: `_raw_batches`).
_SEALED_TABLES = (
    ("azdev_audit_entry", "idx"),
    ("azdev_audit_node", "seq"),
    ("azdev_audit_tree", "size"),
    ("azdev_audit_time_block", "block"),
    ("azdev_audit_checkpoint", "size"),
)


def _raw_batches(
    conn: psycopg.Connection[Any], done: int, batch: int
) -> list[list[tuple[str, list[tuple[Any, ...]]]]]:
    """The rows the sealer wrote for entries from index `done` on, every column, grouped in
    batches of `batch` entries as the sealer commits them: each batch's entries, the nodes they
    complete, and the tree heads, time blocks and checkpoints up to its end."""

    def end_of(table: str, key: int) -> int:
        """The tree size a row belongs to (the first size that holds it)."""
        if table == "azdev_audit_entry":
            return key + 1
        if table == "azdev_audit_node":
            size = key // 2  # the leaf whose append completes node `key` (seq ~ 2 * leaf)
            while 2 * size - size.bit_count() <= key:
                size += 1
            return size
        if table == "azdev_audit_time_block":
            return (key + 1) << AUDIT_BLOCK_BITS
        return key  # tree heads and checkpoints: their size

    first_node = 2 * done - done.bit_count()
    grouped: dict[int, list[tuple[str, list[tuple[Any, ...]]]]] = {}
    for table, key in _SEALED_TABLES:
        start = {
            "azdev_audit_entry": done,
            "azdev_audit_node": first_node,
            "azdev_audit_tree": done + 1,
            "azdev_audit_time_block": done >> AUDIT_BLOCK_BITS,
            "azdev_audit_checkpoint": done + 1,
        }[table]
        found = conn.execute(
            f"SELECT * FROM {table} WHERE {key} >= %s ORDER BY {key}",  # noqa: S608 - constants
            (start,),
        )
        position = [column.name for column in found.description or []].index(key)
        rows = found.fetchall()
        for row in rows:
            if table == "azdev_audit_time_block" and end_of(table, row[position]) <= done:
                continue
            slot = max(0, end_of(table, row[position]) - 1 - done) // batch
            parts = grouped.setdefault(slot, [])
            if not parts or parts[-1][0] != table:
                parts.append((table, []))
            parts[-1][1].append(tuple(row))
    conn.commit()
    return [grouped[slot] for slot in sorted(grouped)]


def bench_sealing(
    server: PgServer, entries: int, work: Path, rounds: int = 5
) -> tuple[float, float, float]:
    """Sealing, raw INSERTs of the rows it wrote into copies of its tables, and raw INSERTs of
    the entry bytes alone into a bare table, interleaved in `rounds` rounds so that all three
    see the same load on a shared machine; returns the three rates (entries per second) over
    all rounds."""
    url = fresh_database(server, "seal")
    db = Database.from_url(url)
    migrate.upgrade(db.engine)
    create_key_file(work / "ledger.key", "bench.example/audit")
    config = LedgerConfig(
        public_host="bench.example", key_file=work / "ledger.key", store_dir=work / "store"
    )
    ctx = ServiceContext(db=db, clock=SystemClock(), pepper=b"p" * 32, ledger=config)
    seal_now(ctx)  # registers the key
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    now = datetime.now(UTC)
    seal_time = raw_time = bare_time = 0.0
    sealed = raw_rows = 0
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        conn.execute("CREATE TABLE bare_entry (idx bigint PRIMARY KEY, entry bytea NOT NULL)")
        for table, _ in _SEALED_TABLES:
            conn.execute(f"CREATE TABLE raw_{table} (LIKE {table} INCLUDING ALL)")
        conn.commit()
        for round_ in range(rounds):
            chunk = entries // rounds + (1 if round_ < entries % rounds else 0)
            for start in range(0, chunk, BATCH):
                cursor.executemany(
                    "INSERT INTO azdev_audit_inbox (txid, created_at, action, actor_kind,"
                    " actor_id, subject_type, subject_id, tenant, body) VALUES"
                    " (pg_current_xact_id()::text::bigint, %s, 'run.event', 'api_key', 'bench',"
                    " 'run', 'ado:bench:1', 'ws', %s)",
                    [(now, BODY)] * min(BATCH, chunk - start),
                )
                conn.commit()
            started = time.perf_counter()
            sealed += seal_now(ctx).sealed
            seal_time += time.perf_counter() - started
            batches = _raw_batches(conn, raw_rows, BATCH)
            rows = [
                bytes(e)
                for (e,) in conn.execute(
                    "SELECT entry FROM azdev_audit_entry WHERE idx >= %s ORDER BY idx",
                    (raw_rows,),
                )
            ]
            conn.commit()
            started = time.perf_counter()
            for parts in batches:
                for table, values in parts:
                    marks = ", ".join(["%s"] * len(values[0]))
                    insert = f"INSERT INTO raw_{table} VALUES ({marks})"  # noqa: S608
                    cursor.executemany(insert, values)
                conn.commit()
            raw_time += time.perf_counter() - started
            started = time.perf_counter()
            for start in range(0, len(rows), BATCH):
                cursor.executemany(
                    "INSERT INTO bare_entry (idx, entry) VALUES (%s, %s)",
                    [(raw_rows + start + i, e) for i, e in enumerate(rows[start : start + BATCH])],
                )
                conn.commit()
            bare_time += time.perf_counter() - started
            raw_rows += len(rows)
    db.dispose()
    return sealed / seal_time, raw_rows / raw_time, raw_rows / bare_time


def write_bundle(folder: Path, entries: int, checkpoints: int) -> None:
    """A bundle in the export's format, written directly (sealing a million entries through
    the database would measure the sealer again, not the verifier)."""
    origin = "bench.example/audit/2026"
    signer = Signer("bench.example/audit", bytes(range(32)))
    every = max(1, entries // checkpoints)
    sizes = sorted({*range(every, entries, every), entries})
    (folder / offline_verify.CHECKPOINT_DIR).mkdir(parents=True)
    rng = CompactRange()
    listed = []
    with open(folder / offline_verify.ENTRIES_FILE, "wb") as out:
        wanted = iter(sizes)
        target = next(wanted)
        for index in range(entries):
            line = compose_entry(BODY, index, origin)
            out.write(line + b"\n")
            rng.push(leaf_hash(line))
            if rng.size == target:
                name = offline_verify.checkpoint_file_name(target)
                note = sign_checkpoint(Checkpoint(origin, target, rng.root()), [signer])
                (folder / name).write_text(note, encoding="utf-8")
                listed.append({"path": name, "size": target, "signed_at": "2026-11-02T10:00:00Z"})
                target = next(wanted, -1)
    keys = [
        {
            "name": signer.name,
            "vkey": signer.verifier().key_string(),
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": None,
        }
    ]
    (folder / offline_verify.KEYS_FILE).write_text(json.dumps(keys), encoding="utf-8")
    (folder / "verify.py").write_bytes(verifier_source())
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(partial(handle.read, 1 << 20), b""):
                    digest.update(chunk)
            rel = path.relative_to(folder).as_posix()
            files.append({"path": rel, "sha256": digest.hexdigest(), "bytes": path.stat().st_size})
    manifest = {
        "format": offline_verify.BUNDLE_FORMAT,
        "origin": origin,
        "size": entries,
        "checkpoints": listed,
        "files": files,
    }
    (folder / offline_verify.MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


def bare_hashing(folder: Path) -> float:
    """SHA-256 of every leaf and node and nothing else (the leaves read into memory first,
    untimed): the floor any verifier pays."""
    with open(folder / offline_verify.ENTRIES_FILE, "rb") as entries:
        leaves = [b"\x00" + line[:-1] for line in entries]
    sha = hashlib.sha256
    stack: list[bytes] = []
    started = time.perf_counter()
    for count, leaf in enumerate(leaves, 1):
        h = sha(leaf).digest()
        n = count
        while not n & 1:
            h = sha(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
    return len(leaves) / (time.perf_counter() - started)


def bench_verify(work: Path, entries: int) -> tuple[float, float, float]:
    folder = work / "bundle"
    write_bundle(folder, entries, checkpoints=20)
    bare = bare_hashing(folder)
    rates = []
    for use_cryptography in (True, False):
        started = time.perf_counter()
        report = offline_verify.verify_bundle(folder, use_cryptography=use_cryptography)
        assert report.ok, report.text()
        rates.append(entries / (time.perf_counter() - started))
    return rates[0], rates[1], bare


def bench_proofs(server: PgServer, entries: int, proofs: int) -> float:
    """A shard of `entries` entries in the sealer's layout (entry rows with their leaf hash,
    nodes from `STORED_LEVEL` up), loaded with COPY; then inclusion proofs read from it."""
    url = fresh_database(server, "proofs")
    db = Database.from_url(url)
    migrate.upgrade(db.engine)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    origin = "bench.example/audit/2026"
    now = datetime.now(UTC)
    rng = CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY azdev_audit_entry (year, idx, entry, leaf, time, action, actor_kind, actor_id,"
            " subject_type, subject_id) FROM STDIN"
        ) as copy:
            for index in range(entries):
                entry = compose_entry(BODY, index, origin)
                leaf = leaf_hash(entry)
                copy.write_row(
                    (2026, index, entry, leaf, now, "run.event", "api_key", "b", "run", "r")
                )
                seq = 2 * index - index.bit_count()
                nodes.extend((2026, seq + lv, h) for lv, h in rng.append_upper(leaf, STORED_LEVEL))
        with cursor.copy("COPY azdev_audit_node (year, seq, hash) FROM STDIN") as copy:
            for row in nodes:
                copy.write_row(row)
        conn.commit()
        conn.execute("ANALYZE")
    picks = [random.randrange(entries) for _ in range(proofs)]
    started = time.perf_counter()
    with db.read() as session:
        reader = node_reader(session, 2026)
        for index in picks:
            inclusion_proof(index, entries, reader)
    elapsed = (time.perf_counter() - started) / proofs
    db.dispose()
    return elapsed


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    work = Path(tempfile.mkdtemp(prefix="ica-bench-"))
    try:
        seal, raw, bare_table = bench_sealing(
            server, sizes.seal_entries, work, rounds=min(5, sizes.seal_entries)
        )
        fast, _pure, bare = bench_verify(work, sizes.bundle_entries)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        Figure(
            f"Sealing, {sizes.seal_entries:,} entries in batches of {BATCH}",
            f"{seal:.0f} entries/s",
            f"raw batched INSERT of the same rows {raw:.0f} entries/s (entry bytes alone into"
            f" a bare table: {bare_table:.0f}/s, ratio {seal / bare_table:.2f})",
            seal / raw,
            ">= 0.5",
            seal / raw >= 0.5,
        ),
        Figure(
            f"verify.py over {sizes.bundle_entries:,} entries",
            f"{fast:.0f} entries/s",
            f"bare SHA-256 {bare:.0f} leaves/s",
            fast / bare,
            ">= 0.5",
            fast / bare >= 0.5,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seal-entries", type=int, default=100_000)
    parser.add_argument("--bundle-entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ica-bench-"))
    server = PgServer.start(durable=True)
    try:
        seal, raw, bare_table = bench_sealing(server, args.seal_entries, work)
        print(f"PostgreSQL with fsync on, batches of {BATCH}, {args.seal_entries} entries")
        print(f"  sealing            {seal:>10.0f} entries/s")
        print(
            f"  raw batched INSERT {raw:>10.0f} entries/s ratio {seal / raw:.2f} (goal >= 0.5;"
            " the same rows, every column, same indexes)"
        )
        print(f"  bare entry bytes   {bare_table:>10.0f} entries/s ratio {seal / bare_table:.2f}")
        fast, pure, bare = bench_verify(work, args.bundle_entries)
        print(f"verify.py over {args.bundle_entries} entries")
        print(
            f"  with cryptography  {fast:>10.0f} entries/s  ratio {fast / bare:.2f} (goal >= 0.5)"
        )
        print(f"  pure Python        {pure:>10.0f} entries/s  ratio {pure / bare:.2f}")
        print(f"  bare hashlib       {bare:>10.0f} leaves/s (leaf and node SHA-256 only)")
        per_proof = bench_proofs(server, args.bundle_entries, args.proofs)
        print(
            f"inclusion proof at {args.bundle_entries} entries: "
            f"{per_proof * 1000:.2f} ms (one read each, {args.proofs} proofs)"
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
