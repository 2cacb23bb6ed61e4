"""Audit queries with a time window (migration 0029), on SQLite and PostgreSQL: a window reads
only the span of blocks whose recorded time range overlaps it, plus the incomplete block at
the end of each shard, and the answer (entries, order, pages, cursors) is exactly the one of
filtering every entry. Action times follow the log order only roughly here, as in a real log:
stragglers sealed long after their action, a shard whose last block is incomplete, two shards."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import AUDIT_BLOCK_SIZE, AuditEntry, AuditShard, AuditTimeBlock
from azdev_ica.jobs.sealer import write_time_blocks
from azdev_ica.queries.audit import AuditFilter, _window_spans, query_entries

START = datetime(2025, 6, 1, tzinfo=UTC)
# Two shards: 2025 with three complete blocks and an incomplete one, 2026 with one block and
# a few entries.
SIZES = {2025: 3 * AUDIT_BLOCK_SIZE + 700, 2026: AUDIT_BLOCK_SIZE + 40}
ACTORS = [f"api_key:k{n}" for n in range(7)]
TENANTS = ["ws", "ck", None]

AUDITOR = Principal.with_role(
    kind="api_key", id="api_key:auditor", name="auditor", role=Role.AUDITOR, tenants=None
)
SCOPED = Principal.with_role(
    kind="api_key", id="api_key:ws", name="ws", role=Role.AUDITOR, tenants=frozenset({"ws"})
)


def _time(year: int, index: int, rng: random.Random) -> datetime:
    """A second per entry from the shard's start, with stragglers: about one entry in 300 was
    sealed up to a day after its action, and the last block of 2025 holds old ones too."""
    base = START + timedelta(days=400 * (year - 2025))
    when = base + timedelta(seconds=10 * index)
    if rng.random() < 1 / 300:
        when -= timedelta(seconds=rng.randrange(1, 86_400))
    if year == 2025 and index >= 3 * AUDIT_BLOCK_SIZE and index % 97 == 0:
        when = base + timedelta(seconds=rng.randrange(0, 10 * index))
    return when


@pytest.fixture
def log(database: Any) -> list[dict[str, Any]]:
    """The shards' entries (written in bulk, as the sealer lays them out) and their blocks."""
    rng = random.Random(2025)
    rows: list[dict[str, Any]] = []
    with database.write() as session:
        for year, size in SIZES.items():
            session.add(AuditShard(year=year, origin=f"test.example/audit/{year}", opened_at=START))
            session.flush()
            batch = [
                {
                    "year": year,
                    "idx": index,
                    "inbox_id": None,
                    "entry": b"{}",
                    "leaf": None,
                    "time": _time(year, index, rng),
                    "action": f"action.{index % 3}",
                    "actor_kind": "api_key",
                    "actor_id": ACTORS[rng.randrange(len(ACTORS)) if index % 5 else 0],
                    "subject_type": "run",
                    "subject_id": f"run:{index % 11}",
                    "tenant": TENANTS[index % 3],
                }
                for index in range(size)
            ]
            session.execute(insert(AuditEntry), batch)
            # In two steps, as two sealed batches would: the second completes the later blocks.
            write_time_blocks(session, year, 0, size // 2)
            write_time_blocks(session, year, size // 2, size)
            rows.extend(batch)
    return rows


def _expected(rows: list[dict[str, Any]], filters: AuditFilter, principal: Principal) -> list[Any]:
    found = [
        (row["year"], row["idx"])
        for row in rows
        if (filters.time_from is None or row["time"] >= filters.time_from)
        and (filters.time_to is None or row["time"] < filters.time_to)
        and (filters.actor is None or row["actor_id"] == filters.actor)
        and (filters.action is None or row["action"] == filters.action)
        and (filters.tenant is None or row["tenant"] == filters.tenant)
        and (filters.year is None or row["year"] == filters.year)
        and (principal is AUDITOR or row["tenant"] == "ws")
    ]
    return sorted(found)


def _pages(
    database: Any, filters: AuditFilter, principal: Principal, limit: int
) -> tuple[list[Any], int]:
    """Every page, following the cursors; and how many pages there were."""
    found: list[Any] = []
    cursor = None
    pages = 0
    while True:
        with database.read() as session:
            rows, cursor = query_entries(
                session, principal=principal, filters=filters, limit=limit, cursor=cursor
            )
        pages += 1
        found.extend((row.year, row.idx) for row in rows)
        if cursor is None:
            return found, pages
        assert len(rows) == limit
        assert pages < 10_000


WINDOWS = {
    "a recent hour of 2026": (START + timedelta(days=400, hours=10), timedelta(hours=1)),
    "an hour in 2025's first block": (START + timedelta(hours=3), timedelta(hours=1)),
    "a day across two blocks": (
        START + timedelta(seconds=10 * AUDIT_BLOCK_SIZE - 40_000), timedelta(days=1)
    ),
    "the stragglers' incomplete block": (
        START + timedelta(seconds=10 * 3 * AUDIT_BLOCK_SIZE), timedelta(hours=2)
    ),
    "from the start to the end": (START - timedelta(days=2), timedelta(days=900)),
    "before anything": (START - timedelta(days=30), timedelta(days=1)),
}  # fmt: skip


def test_a_window_answers_as_filtering_every_entry(database, log):
    for start, length in WINDOWS.values():
        _check_window(database, log, start, length)
    # A tenant-scoped caller, without a window: its tenant, another one, no tenant filter.
    for filters in (AuditFilter(tenant="ws"), AuditFilter(tenant="ck"), AuditFilter()):
        found, _ = _pages(database, filters, SCOPED, limit=5000)
        assert found == _expected(log, filters, SCOPED), filters


def _check_window(database: Any, log: list[dict[str, Any]], start: Any, length: Any) -> None:
    for filters, principal in (
        (AuditFilter(time_from=start, time_to=start + length), AUDITOR),
        (AuditFilter(time_from=start, time_to=start + length, actor=ACTORS[3]), AUDITOR),
        (AuditFilter(time_from=start, time_to=start + length, action="action.1"), SCOPED),
        (AuditFilter(time_from=start), AUDITOR),
        (AuditFilter(time_to=start + length, tenant="ck"), AUDITOR),
        (AuditFilter(time_from=start, time_to=start + length, year=2025), AUDITOR),
    ):
        found, _ = _pages(database, filters, principal, limit=5000)
        assert found == _expected(log, filters, principal), filters


def test_a_window_reads_only_the_blocks_that_can_hold_it_and_blocks_are_exact(database, log):
    """Which spans of the log a window reads: the blocks whose time range overlaps it and each
    shard's incomplete block (the old query read the whole window through the time index and
    sorted it; without blocks it would walk every shard from its start)."""
    tail = 3 * AUDIT_BLOCK_SIZE
    with database.read() as session:
        before = _window_spans(session, AuditFilter(time_to=START - timedelta(days=1)), after=None)
        recent = _window_spans(
            session,
            AuditFilter(time_from=START + timedelta(days=400, hours=10)),
            after=None,
        )
        paged = _window_spans(
            session,
            AuditFilter(time_from=START + timedelta(days=400, hours=10)),
            after=(2026, 77),
        )
        first_block = _window_spans(
            session,
            AuditFilter(time_from=START + timedelta(hours=1), time_to=START + timedelta(hours=2)),
            after=None,
        )
    assert before == [(2025, tail, None), (2026, AUDIT_BLOCK_SIZE, None)]
    assert recent == [(2025, tail, None), (2026, 0, None)]
    assert paged == [(2026, 78, None)]
    # An hour in the first block (stragglers of later blocks may reach back into it).
    assert first_block[0][:2] == (2025, 0)
    assert first_block[0][2] in (AUDIT_BLOCK_SIZE, 2 * AUDIT_BLOCK_SIZE, tail)
    assert first_block[1:] == [(2025, tail, None), (2026, AUDIT_BLOCK_SIZE, None)]
    # Each complete block is recorded once, with its entries' earliest and latest time.
    with database.read() as session:
        blocks = list(
            session.execute(
                select(
                    AuditTimeBlock.year,
                    AuditTimeBlock.block,
                    AuditTimeBlock.min_time,
                    AuditTimeBlock.max_time,
                ).order_by(AuditTimeBlock.year, AuditTimeBlock.block)
            )
        )
    expected = []
    for year, size in SIZES.items():
        for block in range(size // AUDIT_BLOCK_SIZE):
            times = [
                row["time"]
                for row in log
                if row["year"] == year and row["idx"] // AUDIT_BLOCK_SIZE == block
            ]
            expected.append((year, block, min(times), max(times)))
    assert [tuple(b) for b in blocks] == expected


def test_pages_of_any_window_are_those_of_filtering_every_entry(database, log):
    """Property: random windows, filters, callers, page sizes and shard years."""

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
        derandomize=True,
    )
    @given(
        start=st.integers(-3_600, 10 * (SIZES[2025] + 40_000)),
        length=st.integers(1, 10 * 2 * AUDIT_BLOCK_SIZE),
        actor=st.sampled_from([None, *ACTORS[:3]]),
        tenant=st.sampled_from([None, "ws"]),
        scoped=st.booleans(),
        limit=st.sampled_from([7, 100, 1000]),
        year=st.sampled_from([None, 2025, 2026]),
    )
    def check(
        start: int,
        length: int,
        actor: str | None,
        tenant: str | None,
        scoped: bool,
        limit: int,
        year: int | None,
    ) -> None:
        time_from = START + timedelta(seconds=start)
        filters = AuditFilter(
            time_from=time_from,
            time_to=time_from + timedelta(seconds=length),
            actor=actor,
            tenant=tenant,
            year=year,
        )
        principal = SCOPED if scoped else AUDITOR
        expected = _expected(log, filters, principal)
        found, pages = _pages(database, filters, principal, limit)
        assert found == expected
        assert pages == len(expected) // limit + 1

    check()
