"""Tampering that bypasses the database's guards (as a superuser can) is caught by both
`ica audit verify` (the database against its outside store) and the exported bundle's own
`verify.py` (offline), and both name where: the first bad entry index, or the checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from azdev_ica.audit.verify import LedgerReport, verify_ledger
from azdev_ica.auth.principal import Actor
from azdev_ica.db.engine import Database
from azdev_ica.errors import LedgerUnavailable
from azdev_ica.jobs.sealer import checkpoint_store, seal_now
from azdev_ica.ledger.entry import compose_entry
from azdev_ica.ledger.note import Checkpoint, Signer, sign_checkpoint
from azdev_ica.services.audit import record_body
from tests.audit.ledgerdb import activity, export_and_verify, start, unguarded

ORIGIN = "ica.localhost/audit/2026"
K = 5  # the entry the attacker goes after


@pytest.fixture
def ledger(ctx: Any) -> Any:
    """Four runs of activity, sealed and signed after each: checkpoints every few entries."""
    activity(ctx, 4, seal_every=1)
    return ctx


def sizes(ctx: Any) -> list[int]:
    with ctx.db.engine.connect() as conn:
        return list(conn.scalars(text("SELECT size FROM azdev_audit_checkpoint ORDER BY size")))


def entry_bytes(ctx: Any, index: int) -> bytes:
    with ctx.db.engine.connect() as conn:
        raw = conn.scalar(
            text("SELECT entry FROM azdev_audit_entry WHERE year = 2026 AND idx = :i"), {"i": index}
        )
    return bytes(raw)


def set_entry(conn: Any, index: int, data: bytes) -> None:
    conn.execute(
        text("UPDATE azdev_audit_entry SET entry = :e WHERE year = 2026 AND idx = :i"),
        {"e": data, "i": index},
    )


def check(ctx: Any, tmp_path: Path) -> tuple[LedgerReport, dict[str, Any]]:
    """Run both verifiers; both must fail."""
    report = verify_ledger(ctx.db, checkpoint_store(ctx.ledger))
    assert not report.ok, report.text()
    offline = export_and_verify(ctx, tmp_path)
    assert offline.returncode == 1, offline.stdout + offline.stderr
    return report, json.loads(offline.stdout)


def first_bad(report: LedgerReport) -> tuple[int | None, int | None]:
    bad = report.shards[0].first_bad
    assert bad is not None, report.text()
    return bad.index, bad.end


def offline_range_holds(bundle: dict[str, Any], index: int) -> None:
    start, end = bundle["first_bad_index"], bundle["first_bad_index_end"]
    assert start is not None, bundle["problems"]
    assert start <= index < (end if end is not None else index + 1), bundle["problems"]


def test_an_untouched_ledger_passes_both(ledger, tmp_path):
    assert verify_ledger(ledger.db, checkpoint_store(ledger.ledger)).ok
    offline = export_and_verify(ledger, tmp_path)
    assert offline.returncode == 0, offline.stdout
    assert json.loads(offline.stdout)["entries"] == sizes(ledger)[-1]


def test_an_edited_entry(ledger, database, tmp_path):
    edited = entry_bytes(ledger, K).replace(b'"time":"2026', b'"time":"2025')
    assert edited != entry_bytes(ledger, K)
    with unguarded(database, "azdev_audit_entry") as conn:
        set_entry(conn, K, edited)
    report, offline = check(ledger, tmp_path)
    assert first_bad(report) == (K, None)
    assert "does not match the leaf hash" in report.text()
    offline_range_holds(offline, K)


def test_a_deleted_entry(ledger, database, tmp_path):
    with unguarded(database, "azdev_audit_entry") as conn:
        conn.execute(text(f"DELETE FROM azdev_audit_entry WHERE year = 2026 AND idx = {K}"))  # noqa: S608
    report, offline = check(ledger, tmp_path)
    assert first_bad(report) == (K, None)
    assert f"entry {K}: is missing" in report.text()
    offline_range_holds(offline, K)


def test_two_swapped_entries(ledger, database, tmp_path):
    a, b = entry_bytes(ledger, K), entry_bytes(ledger, K + 1)
    with unguarded(database, "azdev_audit_entry") as conn:
        set_entry(conn, K, b)
        set_entry(conn, K + 1, a)
    report, offline = check(ledger, tmp_path)
    assert first_bad(report) == (K, None)
    offline_range_holds(offline, K)


def test_an_inserted_entry(ledger, database, tmp_path):
    """A forged, well-formed entry slipped in at K, the later ones moved up by one."""
    body = record_body(
        actor=Actor(kind="operator", id="mallory"),
        action="run.finish",
        subject_type="run",
        subject_id="ado:proj:1000",
        tenant="ws",
        data={"status": "success"},
        at=ledger.clock.now(),
    )
    with ledger.db.engine.connect() as conn:
        last = conn.scalar(text("SELECT max(idx) FROM azdev_audit_entry"))
    with unguarded(database, "azdev_audit_entry") as conn:
        for index in range(last, K - 1, -1):
            conn.execute(
                text("UPDATE azdev_audit_entry SET idx = idx + 1 WHERE year = 2026 AND idx = :i"),
                {"i": index},
            )
        conn.execute(
            text(
                "INSERT INTO azdev_audit_entry (year, idx, inbox_id, entry, time, action, "
                "actor_kind, actor_id, subject_type, subject_id, tenant) VALUES (2026, :i, NULL, "
                ":e, :t, 'run.finish', 'operator', 'mallory', 'run', 'ado:proj:1000', 'ws')"
            ),
            {"i": K, "e": compose_entry(body, K, ORIGIN), "t": "2026-11-02 09:00:00"},
        )
    report, offline = check(ledger, tmp_path)
    assert first_bad(report) == (K, None)
    offline_range_holds(offline, K)


def test_an_entry_appended_behind_the_sealers_back(ledger, database):
    """Beyond every checkpoint no signature claims it, so the offline bundle (which ends on a
    checkpoint) leaves it out; the database check finds it."""
    size = sizes(ledger)[-1]
    with unguarded(database, "azdev_audit_entry") as conn:
        conn.execute(
            text(
                "INSERT INTO azdev_audit_entry (year, idx, inbox_id, entry, time, action, "
                "actor_kind, actor_id, subject_type, subject_id, tenant) VALUES (2026, :i, NULL, "
                ":e, '2026-11-02 09:00:00', 'x', 'operator', 'mallory', 'x', 'x', NULL)"
            ),
            {"i": size, "e": compose_entry(b"{}", size, ORIGIN)},
        )
    report = verify_ledger(ledger.db, checkpoint_store(ledger.ledger))
    assert first_bad(report) == (size, None)
    assert "written outside the sealer" in report.text()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("tenant", "zz"),
        ("actor_id", "mallory"),
        ("action", "approval.sign"),
        ("subject_id", "ado:proj:9999"),
        ("time", "2026-01-01 00:00:00"),
    ],
)
def test_an_edited_query_column(ledger, database, column, value):
    """Only a column audit queries filter on is edited, the entry itself left whole: its leaf,
    the tree and every checkpoint still hold, and the entry would drop out of its tenant's
    (or actor's, or time window's) audit query. The comparison with the entry's own fields
    names it."""
    with unguarded(database, "azdev_audit_entry") as conn:
        conn.execute(
            text(f"UPDATE azdev_audit_entry SET {column} = :v WHERE year = 2026 AND idx = :i"),  # noqa: S608
            {"v": value, "i": K},
        )
    report = verify_ledger(ledger.db, checkpoint_store(ledger.ledger))
    assert first_bad(report) == (K, None)
    assert f"entry {K}: its query columns ({column}) differ" in report.text()


def test_a_cut_off_tail(ledger, database, tmp_path):
    """Everything after size m removed, consistently: entries, nodes, tree heads, checkpoints.
    Only the checkpoints published outside the database remember the lost entries."""
    m = sizes(ledger)[1]
    tables = ("entry", "node", "tree", "checkpoint")
    with unguarded(database, *(f"azdev_audit_{t}" for t in tables)) as conn:
        conn.execute(text(f"DELETE FROM azdev_audit_entry WHERE idx >= {m}"))  # noqa: S608
        conn.execute(text(f"DELETE FROM azdev_audit_tree WHERE size > {m}"))  # noqa: S608
        conn.execute(text(f"DELETE FROM azdev_audit_checkpoint WHERE size > {m}"))  # noqa: S608
        conn.execute(text(f"DELETE FROM azdev_audit_node WHERE seq >= {2 * m - m.bit_count()}"))  # noqa: S608
    report, offline = check(ledger, tmp_path)
    assert first_bad(report) == (m, None)
    assert "rewound" in report.text()
    assert offline["first_bad_index"] == m
    assert any("missing" in p["message"] for p in offline["problems"])


def test_a_replaced_checkpoint(ledger, database, tmp_path):
    size = sizes(ledger)[1]
    forged = sign_checkpoint(
        Checkpoint(ORIGIN, size, b"\x07" * 32), [Signer("ica.localhost/audit", b"\x01" * 32)]
    )
    with unguarded(database, "azdev_audit_checkpoint") as conn:
        conn.execute(
            text("UPDATE azdev_audit_checkpoint SET note = :n WHERE size = :s"),
            {"n": forged, "s": size},
        )
    report, offline = check(ledger, tmp_path)
    text_report = report.text()
    assert f"checkpoint {size}: does not verify" in text_report
    assert f"checkpoint {size}: differs from the one published" in text_report
    assert offline["first_bad_checkpoint"] is not None
    assert f"{size:020d}" in offline["first_bad_checkpoint"]


@pytest.fixture
def rewound(
    ledger: Any, db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """The ledger's database as it was before more activity was sealed and published: the
    database rewound to an earlier copy, the outside store left as it is."""
    snapshot_size = sizes(ledger)[-1]
    if ledger.db.dialect == "sqlite":
        copy = tmp_path / "earlier.db"
        raw = ledger.db.engine.raw_connection()  # VACUUM cannot run inside a transaction
        try:
            raw.cursor().execute(f"VACUUM INTO '{copy}'")
        finally:
            raw.close()
        url = f"sqlite:///{copy}"
    else:
        admin_url: str = request.getfixturevalue("pg_admin_url")
        name = db_url.rsplit("/", 1)[1]
        ledger.db.dispose()
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}_earlier" TEMPLATE "{name}"'))
        url = f"{db_url}_earlier"
    activity(ledger, 2, seal_every=1, first=2000)  # newer history, published outside
    earlier = Database.from_url(url)
    yield dataclasses.replace(ledger, db=earlier), snapshot_size
    earlier.dispose()
    if ledger.db.dialect == "postgresql":
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}_earlier" WITH (FORCE)'))
        admin.dispose()
    shutil.rmtree(tmp_path / "unpacked", ignore_errors=True)


def test_a_database_rewound_to_an_earlier_copy(rewound, tmp_path):
    ctx, snapshot_size = rewound
    report, offline = check(ctx, tmp_path)
    assert first_bad(report) == (snapshot_size, None)
    assert "rewound" in report.text()
    assert offline["first_bad_index"] == snapshot_size
    # Nor does the sealer write a second history over the published one.
    start(ctx, 3000)
    with pytest.raises(LedgerUnavailable, match="restored from an older copy"):
        seal_now(ctx)


def test_an_edited_sealed_inbox_row(ledger, database):
    """The inbox keeps a second copy of every sealed record (receipts and the monthly report
    read it); editing it leaves the tree intact, but `ica audit verify` compares the two."""
    with database.engine.connect() as conn:
        inbox_id, body = conn.execute(
            text(
                "SELECT inbox_id, i.body FROM azdev_audit_entry e JOIN azdev_audit_inbox i "
                "ON i.id = e.inbox_id WHERE e.year = 2026 AND e.idx = :i"
            ),
            {"i": K},
        ).one()
    edited = bytes(body).replace(b'"time":"2026', b'"time":"2025')
    assert edited != bytes(body)
    with unguarded(database, "azdev_audit_inbox") as conn:
        conn.execute(
            text("UPDATE azdev_audit_inbox SET body = :b WHERE id = :i"),
            {"b": edited, "i": inbox_id},
        )
    report = verify_ledger(ledger.db, checkpoint_store(ledger.ledger))
    assert not report.ok
    assert first_bad(report) == (K, None)
    assert "differs from its inbox row" in report.text()
