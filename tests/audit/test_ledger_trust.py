"""The ledger trusts nothing it did not compute, and a stalled ledger is loud: a running server
(real HTTP, its own background sealer) on SQLite and PostgreSQL.

An attacker holding only the application's INSERT right (on PostgreSQL, a role with exactly
the documented grants) adds tree heads with invented roots, entries made from no inbox row,
stored nodes: the sealer signs none of it, stops, and says why (a critical alert, once;
`/ready` still 200, its body `stalled`); writes keep answering 201.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

from azdev_ica.db.engine import Database
from azdev_ica.db.grants import grant_statements
from azdev_ica.db.tables import (
    AuditCheckpoint,
    AuditEntry,
    AuditInbox,
    AuditNode,
    AuditTree,
    LedgerStall,
    OutboxMessage,
)
from azdev_ica.db.types import stored_bytes
from azdev_ica.jobs.sealer import checkpoint_store
from azdev_ica.ledger.entry import compose_entry
from azdev_ica.ledger.keyfile import read_signers
from azdev_ica.ledger.merkle import CompactRange, leaf_hash
from azdev_ica.ledger.note import Checkpoint, sign_checkpoint
from azdev_ica.services.ledger_status import clear_stall, ledger_status, set_stall
from tests.conftest import bearer
from tests.support.liveserver import LiveServer

API = "/api/v1/azdev"
ORIGIN = "ica.localhost/audit/2026"
YEAR = 2026


def run_body(number: int) -> dict[str, Any]:
    return {
        "provider": "ado",
        "project_id": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
        "run_id": str(number),
        "pipeline_name": "farmer-registry-ci",
        "tenant": "to",
        "stage": "test",
    }


def http(method: str, url: str, body: Any = None, headers: Any = None) -> tuple[int, Any]:
    """One real HTTP request; the status and the decoded JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (the background sealer runs in its own thread)."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.02)):
        value = condition()
        if value:
            return value
        pause.wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server(settings: Any, database: Any, clock: Any, ctx: Any) -> Iterator[Any]:
    """A running server with its background sealer (fast intervals)."""
    from azdev_ica.api.app import create_app

    running = settings.model_copy(
        update={
            "ledger_sealer": True,
            "ledger_seal_interval_seconds": 0.02,
            "ledger_checkpoint_interval_seconds": 0.05,
        }
    )
    app = create_app(running, database=database, clock=clock)
    live = LiveServer(app, lifespan="on").start()
    try:
        yield live, app
    finally:
        live.stop()


@pytest.fixture
def writer(server: Any, make_key: Any) -> Callable[[int], int]:
    """Start run ``number`` over HTTP; the response's status."""
    live, _ = server
    headers = bearer(make_key("azdev_devops"))

    def write(number: int) -> int:
        return http("POST", f"{live.url}{API}/run/start", run_body(number), headers)[0]

    return write


@pytest.fixture
def attacker(ctx: Any, db_url: str) -> Iterator[Database]:
    """A connection holding only what the application holds: on PostgreSQL a fresh role with
    exactly the documented grants (no UPDATE, DELETE, TRUNCATE on the ledger)."""
    if ctx.db.dialect != "postgresql":
        yield ctx.db
        return
    role = f"ica_attacker_{uuid.uuid4().hex[:8]}"
    with ctx.db.engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        for statement in grant_statements(role):
            conn.execute(text(statement))
    database = Database.from_url(
        make_url(db_url).set(username=role).render_as_string(hide_password=False), pool_size=1
    )
    yield database
    database.dispose()
    with ctx.db.engine.begin() as conn:
        conn.execute(text(f"DROP OWNED BY {role}"))
        conn.execute(text(f"DROP ROLE {role}"))


def sealed_state(ctx: Any) -> tuple[list[bytes], Any]:
    """The genuine leaves of the 2026 shard and its latest tree head."""
    with ctx.read() as session:
        leaves = [
            stored_bytes(leaf)
            for leaf in session.scalars(
                select(AuditEntry.leaf).where(AuditEntry.year == YEAR).order_by(AuditEntry.idx)
            )
        ]
        head = session.scalars(
            select(AuditTree).where(AuditTree.year == YEAR).order_by(AuditTree.size.desc())
        ).first()
    return leaves, head


def signed(ctx: Any) -> list[tuple[int, bytes]]:
    with ctx.read() as session:
        return [
            (size, stored_bytes(root))
            for size, root in session.execute(
                select(AuditCheckpoint.size, AuditCheckpoint.root)
                .where(AuditCheckpoint.year == YEAR)
                .order_by(AuditCheckpoint.size)
            )
        ]


def stall_alerts(ctx: Any) -> list[dict[str, Any]]:
    with ctx.read() as session:
        return [
            dict(payload)
            for payload in session.scalars(
                select(OutboxMessage.payload).where(OutboxMessage.topic == "ledger.stalled")
            )
        ]


def sealer_stall(ctx: Any) -> str | None:
    with ctx.read() as session:
        row = session.get(LedgerStall, "sealer")
        return row.reason if row is not None else None


def settle(ctx: Any, writer: Callable[[int], int]) -> int:
    """Two writes, sealed and signed: the genuine log the attack starts from."""
    for number in (1, 2):
        assert writer(number) == 201

    def settled() -> int:
        if ledger_status(ctx).backlog.count:
            return 0
        checkpoints = signed(ctx)
        size = len(sealed_state(ctx)[0])
        return size if checkpoints and checkpoints[-1][0] == size else 0

    return wait_until(settled, "the first writes to be sealed and signed")


# --- what the attacker inserts ---------------------------------------------------------------


def invented_head(leaves: list[bytes], head: Any) -> dict[str, Any]:
    """A tree head of a larger tree with an invented root."""
    bogus = CompactRange()
    for i in range(len(leaves) + 3):
        bogus.append(leaf_hash(b"invented %d" % i))
    return {"trees": [_head_row(bogus, head)]}


def entry_from_no_inbox_row(leaves: list[bytes], head: Any) -> dict[str, Any]:
    """An entry that was never an inbox row, and a tree head whose root and edge are exactly
    those of the genuine entries followed by it: every hash adds up."""
    size = len(leaves)
    body = b'{"action":"run.start","actor":{"id":"mallory","kind":"api_key"},"data":{},"subject":{"id":"x","type":"run"},"tenant":"ws","time":"2026-11-02T09:00:00.000000Z"}'  # noqa: E501
    entry = compose_entry(body, size, ORIGIN)
    extended = CompactRange()
    for leaf in leaves:
        extended.append(leaf)
    extended.append(leaf_hash(entry))
    row = {
        "year": YEAR,
        "idx": size,
        "inbox_id": None,
        "entry": entry,
        "leaf": leaf_hash(entry),
        "time": head.sealed_at,
        "action": "run.start",
        "actor_kind": "api_key",
        "actor_id": "mallory",
        "subject_type": "run",
        "subject_id": "x",
        "tenant": "ws",
    }
    return {"entries": [row], "trees": [_head_row(extended, head)]}


def future_node(leaves: list[bytes], head: Any) -> dict[str, Any]:
    """A stored node where the sealer will write one later."""
    return {"nodes": [{"year": YEAR, "seq": 2 * len(leaves) + 200, "hash": os.urandom(32)}]}


def _head_row(tree: CompactRange, head: Any) -> dict[str, Any]:
    return {
        "year": YEAR,
        "size": tree.size,
        "root": tree.root(),
        "edge": tree.to_bytes(),
        "inbox_floor": head.inbox_floor,
        "inbox_cursor": head.inbox_cursor,
        "sealed_at": head.sealed_at,
    }


TABLES = {"entries": AuditEntry, "trees": AuditTree, "nodes": AuditNode}
ATTACKS = {
    "invented_head": (invented_head, "names entries up to"),
    "entry_from_no_inbox_row": (entry_from_no_inbox_row, "was not made from an inbox row"),
    "future_node": (future_node, "lies beyond its tree"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_insert_only_attacker_gets_nothing_signed(
    attack, ctx, server, writer, attacker, client_ready
):
    genuine_size = settle(ctx, writer)
    leaves, head = sealed_state(ctx)
    forge, why = ATTACKS[attack]
    with attacker.engine.begin() as conn:
        for table, rows in forge(leaves, head).items():
            conn.execute(insert(TABLES[table]), rows)
    # Writes go on; the sealer, asked to seal them, refuses and says why.
    assert writer(3) == 201
    reason = wait_until(lambda: sealer_stall(ctx), "the sealer to stop")
    assert why in reason
    assert [a["reason"] for a in stall_alerts(ctx)] == [reason]
    assert stall_alerts(ctx)[0]["severity"] == "critical"
    # Nothing the attacker wrote was signed, in the database or outside.
    genuine = CompactRange()
    roots = {}
    for i, leaf in enumerate(leaves[:genuine_size], 1):
        genuine.append(leaf)
        roots[i] = genuine.root()
    assert all(size <= genuine_size and roots[size] == root for size, root in signed(ctx))
    store = checkpoint_store(ctx.ledger)
    assert store is not None
    latest = store.latest(ORIGIN)
    assert latest is not None
    assert latest.size <= genuine_size
    body = client_ready()
    assert body["ledger"]["state"] == "stalled"
    assert why in body["ledger"]["reason"]
    assert body["ledger"]["backlog"]["count"] >= 1


@pytest.fixture
def client_ready(server: Any) -> Callable[[], dict[str, Any]]:
    live, _ = server

    def ready() -> dict[str, Any]:
        status, body = http("GET", f"{live.url}/ready")
        assert status == 200, body
        return body

    return ready


# --- a stalled ledger is loud ----------------------------------------------------------------


def test_a_rewound_database_stalls_loudly_once_and_writes_go_on(ctx, server, writer, client_ready):
    size = settle(ctx, writer)
    _, app = server
    assert client_ready()["ledger"] == {
        "state": "ok",
        "reason": None,
        "reasons": [],
        "backlog": {"count": 0, "oldest_at": None, "oldest_age_seconds": None},
    }
    # What a later history published before the database was restored from a backup.
    signer = read_signers(ctx.ledger.key_file)[-1]
    note = sign_checkpoint(Checkpoint(ORIGIN, size + 5, b"\x01" * 32), [signer])
    checkpoint_store(ctx.ledger).put(ORIGIN, size + 5, note, ctx.clock.now())
    app.state.sealer._checked_store = False  # as after a restart on the restored database
    assert writer(3) == 201
    reason = wait_until(lambda: sealer_stall(ctx), "the sealer to stop")
    assert "restored from an older copy" in reason
    passes = app.state.sealer.passes
    assert writer(4) == 201
    wait_until(lambda: app.state.sealer.passes > passes + 3, "a few more sealer passes")
    assert len(stall_alerts(ctx)) == 1  # once, not once per pass
    body = client_ready()
    assert body["checks"]["ledger"] == "stalled"
    assert body["ledger"]["reasons"][0]["source"] == "sealer"
    backlog = body["ledger"]["backlog"]
    assert backlog["count"] >= 2
    assert backlog["oldest_at"] is not None


def test_a_key_file_readable_by_others_stalls_until_fixed(ctx, server, writer, client_ready):
    settle(ctx, writer)
    key_file = ctx.ledger.key_file
    key_file.chmod(0o644)
    try:
        assert writer(3) == 201
        reason = wait_until(lambda: sealer_stall(ctx), "the sealer to stop")
        assert "readable by others" in reason
        assert client_ready()["ledger"]["state"] == "stalled"
    finally:
        key_file.chmod(0o600)
    wait_until(lambda: sealer_stall(ctx) is None, "the sealer to seal again")
    wait_until(lambda: client_ready()["ledger"]["backlog"]["count"] == 0, "the backlog to drain")
    assert client_ready()["ledger"]["state"] == "ok"
    with ctx.read() as session:
        actions = list(session.scalars(select(AuditInbox.action).order_by(AuditInbox.id)))
    assert "ledger.stalled" in actions
    assert "ledger.resumed" in actions


def test_another_source_stops_the_sealer_until_it_clears_its_reason(
    ctx, server, writer, client_ready
):
    size = settle(ctx, writer)
    assert set_stall(ctx, source="witness", reason="witness w1 refused checkpoint 9")
    assert not set_stall(ctx, source="witness", reason="witness w1 refused checkpoint 9")
    _, app = server
    passes = app.state.sealer.passes
    assert writer(3) == 201
    wait_until(lambda: app.state.sealer.passes > passes + 3, "a few sealer passes")
    assert len(sealed_state(ctx)[0]) == size  # nothing sealed while the witness objects
    body = client_ready()["ledger"]
    assert body["state"] == "stalled"
    assert "witness w1 refused" in body["reason"]
    assert len(stall_alerts(ctx)) == 1
    assert clear_stall(ctx, source="witness")
    wait_until(lambda: ledger_status(ctx).backlog.count == 0, "the backlog to drain")
    assert ledger_status(ctx).state == "ok"


def test_an_old_backlog_alone_means_stalled(ctx, clock):
    """No reason set, but nothing sealed for longer than the setting (no sealer running)."""
    from datetime import timedelta

    from tests.audit.ledgerdb import start

    before = ledger_status(ctx).backlog.count  # the policy's record, say
    start(ctx, 1)
    assert ledger_status(ctx).state == "ok"
    clock.advance(timedelta(seconds=61))
    status = ledger_status(ctx)
    assert status.state == "stalled"
    assert status.reasons[0].source == "backlog"
    assert status.backlog.count == before + 1
    assert status.backlog.oldest_age_seconds == 61
