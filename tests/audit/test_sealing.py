"""Sealing the inbox into the ledger, on SQLite and PostgreSQL: order, hashing, checkpoints,
the outside store, yearly shards, the lease, keys, late commits, receipts, personal data."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from azdev_ica.audit.verify import verify_ledger
from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import (
    AuditCheckpoint,
    AuditEntry,
    AuditInbox,
    AuditShard,
    PersonalDataOpening,
)
from azdev_ica.errors import LedgerUnavailable
from azdev_ica.jobs.lease import holder_of
from azdev_ica.jobs.sealer import (
    IDLE_SLOWDOWN,
    SEALER_LEASE,
    Sealer,
    _idle_check,
    acquire_lease,
    checkpoint_store,
    has_pending,
    seal_now,
    wait_for_entry,
)
from azdev_ica.ledger.entry import compose_entry, parse_entry
from azdev_ica.ledger.keyfile import add_signer, read_signers
from azdev_ica.ledger.merkle import MemoryTree
from azdev_ica.ledger.note import Checkpoint, Signer, Verifier, open_checkpoint, sign_checkpoint
from azdev_ica.services.audit import append_audit, commitment_of, on_append
from azdev_ica.services.ledger import register_signing_key
from tests.audit.ledgerdb import activity, export_and_verify, start, with_ledger

POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
OPERATOR = Actor(kind="operator", id="test")


def entries(ctx: Any, year: int = 2026) -> list[AuditEntry]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.year == year).order_by(AuditEntry.idx)
            )
        )


def checkpoints(ctx: Any, year: int = 2026) -> list[AuditCheckpoint]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(AuditCheckpoint)
                .where(AuditCheckpoint.year == year)
                .order_by(AuditCheckpoint.size)
            )
        )


def verifiers(ctx: Any) -> list[Verifier]:
    return [s.verifier() for s in read_signers(ctx.ledger.key_file)]


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for a background sealer's state (it runs in its own thread)."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        pause.wait(0.02)
    raise AssertionError("timed out")


def audit_action(ctx: Any, action: str = "test.action") -> int:
    def act(session: Session) -> int:
        return append_audit(
            session,
            actor=OPERATOR,
            action=action,
            subject_type="test",
            subject_id="x",
            tenant=None,
            data={},
            at=ctx.clock.now(),
        )

    return int(ctx.run_action(act))


class TestSealing:
    def test_every_record_becomes_an_entry_in_order_under_a_signed_root(self, ctx):
        activity(ctx, 3)
        rows = entries(ctx)
        assert [e.idx for e in rows] == list(range(len(rows)))
        with ctx.read() as session:
            inbox = {r.id: r for r in session.scalars(select(AuditInbox))}
        origin = "ica.localhost/audit/2026"
        assert parse_entry(rows[0].entry).body["action"] == "ledger.open"
        for row in rows[1:]:
            source = inbox[row.inbox_id]
            assert row.entry == compose_entry(source.body, row.idx, origin)
            assert (row.action, row.subject_id, row.time) == (
                source.action,
                source.subject_id,
                source.created_at,
            )
        assert sorted(r.inbox_id for r in rows[1:]) == sorted(inbox)  # each exactly once
        tree = MemoryTree()
        for row in rows:
            tree.append(row.entry)
        signed = checkpoints(ctx)
        assert len(signed) >= 2
        for cp in signed:
            checkpoint, _ = open_checkpoint(cp.note, verifiers(ctx), origin)
            assert (checkpoint.size, checkpoint.root_hash) == (cp.size, tree.root(cp.size))
        assert signed[-1].size == len(rows)
        store = checkpoint_store(ctx.ledger)
        assert [store.get(origin, cp.size).note for cp in signed] == [cp.note for cp in signed]
        assert verify_ledger(ctx.db, store).ok

    def test_nothing_new_signs_nothing(self, ctx):
        first = seal_now(ctx)
        assert first.checkpoints
        again = seal_now(ctx)
        assert (again.sealed, again.checkpoints) == (0, [])

    def test_without_a_signing_key_the_sealer_refuses_and_says_why(self, ctx, tmp_path):
        keyless = with_ledger(ctx, key_file=tmp_path / "none.key")
        with pytest.raises(LedgerUnavailable, match=r"none\.key does not exist.*ica keys init"):
            seal_now(keyless)
        assert entries(ctx) == []

    def test_a_key_file_others_can_read_is_refused(self, ctx):
        os.chmod(ctx.ledger.key_file, 0o644)
        with pytest.raises(LedgerUnavailable, match="readable by others"):
            seal_now(ctx)

    def test_one_sealer_at_a_time(self, ctx, clock):
        assert acquire_lease(ctx, SEALER_LEASE, "replica-2", 30)
        with pytest.raises(LedgerUnavailable, match="held by replica-2"):
            seal_now(ctx)
        assert entries(ctx) == []
        clock.advance(timedelta(seconds=31))  # replica-2 stopped renewing: the lease runs out
        assert seal_now(ctx).sealed


class TestShards:
    def test_a_new_year_starts_a_shard_linked_to_the_last_one(self, ctx, clock, tmp_path):
        activity(ctx, 2)
        clock.set(datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC))
        start(ctx, 9999)
        seal_now(ctx)
        old, new = entries(ctx, 2026), entries(ctx, 2027)
        final = checkpoints(ctx, 2026)[-1]
        assert final.size == len(old)
        genesis = parse_entry(new[0].entry)
        assert genesis.origin == "ica.localhost/audit/2027"
        assert genesis.body["action"] == "ledger.open"
        assert genesis.body["data"] == {
            "previous_checkpoint": final.note,
            "previous_origin": "ica.localhost/audit/2026",
        }
        assert parse_entry(new[1].entry).body["action"] == "run.start"
        with ctx.read() as session:
            shard = session.get(AuditShard, 2027)
            assert shard is not None
            assert shard.previous_checkpoint == final.note
        report = verify_ledger(ctx.db, checkpoint_store(ctx.ledger))
        assert report.ok, report.text()
        assert [s.origin for s in report.shards] == [
            "ica.localhost/audit/2026",
            "ica.localhost/audit/2027",
        ]


@POSTGRESQL_ONLY
def test_a_record_that_commits_after_a_later_one_is_still_sealed(ctx):
    """Inbox ids do not commit in order on PostgreSQL: the sealer must not skip the earlier
    id that was invisible when the later one was sealed."""
    seal_now(ctx)
    with ctx.db.write() as slow:
        early = append_audit(
            slow,
            actor=OPERATOR,
            action="test.slow",
            subject_type="test",
            subject_id="slow",
            tenant=None,
            data={},
            at=ctx.clock.now(),
        )
        late = audit_action(ctx, "test.fast")  # another transaction, committed first
        assert late > early
        assert seal_now(ctx).sealed == 1
        assert _idle_check(ctx) == (False, False)  # the slow one is not visible yet
    assert _idle_check(ctx)[0]  # now it is: below the cursor, yet pending
    assert seal_now(ctx).sealed == 1  # the slow one, now committed
    assert _idle_check(ctx) == (False, False)
    sealed = {e.inbox_id for e in entries(ctx)}
    assert {early, late} <= sealed
    assert verify_ledger(ctx.db, checkpoint_store(ctx.ledger)).ok


class TestIdleSealer:
    def test_one_statement_tells_whether_a_record_waits_or_the_tree_is_unsigned(self, ctx):
        assert _idle_check(ctx) == (True, False)  # the policy's records; no shard yet
        seal_now(ctx, checkpoint=False)
        assert _idle_check(ctx) == (False, True)
        seal_now(ctx)
        assert _idle_check(ctx) == (False, False)
        assert not has_pending(ctx)
        audit_action(ctx)
        assert _idle_check(ctx) == (True, False)
        assert has_pending(ctx)

    def test_an_idle_sealer_waits_longer_until_this_process_appends(self, ctx):
        sealer = Sealer(ctx)  # not started: its waits are counted here
        waits: list[float] = []
        append_at = [0]

        class Wake:
            def wait(self, timeout: float) -> bool:
                waits.append(timeout)
                if len(waits) == append_at[0]:
                    audit_action(ctx)
                return False

            def clear(self) -> None:
                pass

        sealer._wake = Wake()  # type: ignore[assignment]
        interval = ctx.ledger.seal_interval
        pauses = []
        for idle in (0, 1, 2, 3, 50):
            waits.clear()
            sealer._idle_passes = idle
            sealer._pause()
            pauses.append(len(waits))
        assert pauses == [1, 2, 4, IDLE_SLOWDOWN, IDLE_SLOWDOWN]
        assert set(waits) == {interval}
        stop = on_append(sealer._heard_append)
        try:
            waits.clear()
            append_at[0] = 2  # a record appended in this process during the second interval
            sealer._pause()
            assert len(waits) == 2  # the pass comes at the end of that interval
        finally:
            stop()
        waits.clear()
        sealer._pause()  # no longer listening: the whole slow wait
        assert len(waits) == IDLE_SLOWDOWN

    def test_a_started_sealer_hears_this_process_append_until_stopped(self, ctx):
        slow = with_ledger(ctx, seal_interval=60.0)  # one pass, then a long wait
        sealer = Sealer(slow).start()
        try:
            before = sealer._appends
            audit_action(slow)
            assert sealer._appends != before
        finally:
            sealer.stop()
        assert not sealer._thread.is_alive()  # stop() ends even a long wait at once
        after = sealer._appends
        audit_action(slow)
        assert sealer._appends == after


class TestReceipts:
    def test_a_caller_can_wait_for_its_entry_with_a_bound(self, ctx):
        inbox_id = audit_action(ctx)
        assert wait_for_entry(ctx, inbox_id, 0) is None
        seal_now(ctx)
        ref = wait_for_entry(ctx, inbox_id, 5)
        assert ref is not None
        assert ref.year == 2026
        assert entries(ctx)[ref.index].inbox_id == inbox_id

    def test_the_background_sealer_seals_signs_and_stops(self, ctx):
        fast = with_ledger(ctx, seal_interval=0.02, checkpoint_interval=0.05)
        sealer = Sealer(fast).start()
        try:
            inbox_id = audit_action(fast)
            ref = wait_for_entry(fast, inbox_id, 10)
            assert ref is not None
            sealer.request_checkpoint()
            for _ in range(500):
                signed = checkpoints(ctx)
                if signed and signed[-1].size > ref.index and sealer.status == "ok":
                    break
                wait_for_entry(fast, -1, 0.02)
            assert checkpoints(ctx)[-1].size > ref.index
            assert sealer.status == "ok"
        finally:
            sealer.stop()
        assert not sealer._thread.is_alive()
        assert acquire_lease(ctx, SEALER_LEASE, "next", 30)  # released on stop

    def test_two_replicas_seal_one_log(self, ctx):
        fast = with_ledger(ctx, seal_interval=0.01, checkpoint_interval=0.05)
        replicas = [Sealer(fast).start(), Sealer(fast).start()]
        try:
            written = [audit_action(fast) for _ in range(20)]
            assert all(wait_for_entry(fast, i, 10) is not None for i in written)
        finally:
            for replica in replicas:
                replica.stop()
        rows = entries(ctx)
        assert [e.idx for e in rows] == list(range(len(rows)))
        assert set(written) <= {e.inbox_id for e in rows}
        assert verify_ledger(ctx.db, checkpoint_store(ctx.ledger)).ok

    def test_a_standby_sealer_sends_nothing_and_takes_over_when_the_active_one_stops(self, ctx):
        # A long lease: the standby would ask for it again only after 20 s.
        fast = with_ledger(ctx, seal_interval=0.01, checkpoint_interval=0.05, lease_seconds=60.0)
        statements: dict[int, int] = {}

        def count(*_: Any) -> None:
            ident = threading.get_ident()
            statements[ident] = statements.get(ident, 0) + 1

        def sent_by(sealer: Sealer) -> int:
            assert sealer._thread is not None
            return statements.get(sealer._thread.ident or 0, 0)

        event.listen(ctx.db.engine, "before_cursor_execute", count)
        active = Sealer(fast).start()
        standby = Sealer(fast)
        try:
            _until(lambda: active.status == "ok")
            assert holder_of(ctx, SEALER_LEASE)[0] == active.holder
            standby.start()
            _until(lambda: standby.status.startswith("standby"))
            sent, passes = sent_by(standby), active.passes
            # Records appended in this process wake both; only the active one looks and seals.
            written = [audit_action(fast) for _ in range(5)]
            assert all(wait_for_entry(fast, i, 10) is not None for i in written)
            standby.request_checkpoint()  # wakes the standby: still nothing to send
            _until(lambda: active.passes > passes + 10)
            assert sent_by(standby) == sent
            assert holder_of(ctx, SEALER_LEASE)[0] == active.holder
            active.stop()  # hands the lease back
            standby._standby_until = 0.0  # (its next ask, without waiting 20 s)
            standby._wake.set()
            late = audit_action(fast)
            assert wait_for_entry(fast, late, 10) is not None
            assert holder_of(ctx, SEALER_LEASE)[0] == standby.holder
            _until(lambda: standby.status == "ok")
        finally:
            event.remove(ctx.db.engine, "before_cursor_execute", count)
            active.stop()
            standby.stop()
        assert verify_ledger(ctx.db, checkpoint_store(ctx.ledger)).ok

    def test_the_background_sealer_without_a_key_says_why(self, ctx, tmp_path, caplog):
        keyless = with_ledger(ctx, key_file=tmp_path / "no.key", seal_interval=0.02)
        sealer = Sealer(keyless).start()
        try:
            for _ in range(200):
                if "ica keys init" in sealer.status:
                    break
                wait_for_entry(ctx, -1, 0.02)
        finally:
            sealer.stop()
        assert "refuses to seal" in sealer.status
        assert "ica keys init" in caplog.text


class TestStoreCrossCheck:
    def test_a_database_behind_its_published_checkpoint_refuses_to_seal(self, ctx):
        activity(ctx, 1)
        size = checkpoints(ctx)[-1].size
        # What a newer history published before the database was restored from a backup.
        signer = read_signers(ctx.ledger.key_file)[-1]
        origin = "ica.localhost/audit/2026"
        note = sign_checkpoint(Checkpoint(origin, size + 5, b"\x01" * 32), [signer])
        checkpoint_store(ctx.ledger).put(origin, size + 5, note, ctx.clock.now())
        audit_action(ctx)
        with pytest.raises(LedgerUnavailable, match="restored from an older copy"):
            seal_now(ctx)

    def test_an_older_published_checkpoint_the_tree_contradicts_fails_verify(self, ctx):
        activity(ctx, 1)
        size = checkpoints(ctx)[-1].size
        signer = read_signers(ctx.ledger.key_file)[-1]
        origin = "ica.localhost/audit/2026"
        note = sign_checkpoint(Checkpoint(origin, size - 1, b"\x02" * 32), [signer])
        checkpoint_store(ctx.ledger).put(origin, size - 1, note, ctx.clock.now())
        checkpoint_store(ctx.ledger).put(origin, size, checkpoints(ctx)[-1].note, ctx.clock.now())
        audit_action(ctx)
        # The latest published checkpoint matches; rewriting history below it is verify's job.
        seal_now(ctx)
        report = verify_ledger(ctx.db, checkpoint_store(ctx.ledger))
        assert not report.ok


class TestKeys:
    def test_rotation_switches_keys_at_the_announced_time(self, ctx, clock, tmp_path):
        activity(ctx, 1)
        old = read_signers(ctx.ledger.key_file)[-1]
        new = add_signer(ctx.ledger.key_file, old.name)
        register_signing_key(
            ctx,
            actor=OPERATOR,
            verifier=new.verifier(),
            valid_from=clock.now() + timedelta(seconds=60),
        )
        audit_action(ctx)
        seal_now(ctx)
        assert checkpoints(ctx)[-1].key_id == f"{old.key_id:08x}"  # still the old key's turn
        clock.advance(timedelta(seconds=61))
        audit_action(ctx)
        seal_now(ctx)
        assert checkpoints(ctx)[-1].key_id == f"{new.key_id:08x}"
        assert verify_ledger(ctx.db, checkpoint_store(ctx.ledger)).ok
        result = export_and_verify(ctx, tmp_path)
        assert result.returncode == 0, result.stdout
        assert len(json.loads(result.stdout)["keys"]) == 2

    def test_a_sealer_without_the_current_key_refuses(self, ctx, clock):
        seal_now(ctx)
        clock.advance(timedelta(seconds=1))
        stranger = Signer.generate("ica.localhost/audit")
        register_signing_key(ctx, actor=OPERATOR, verifier=stranger.verifier())
        audit_action(ctx)
        with pytest.raises(LedgerUnavailable, match="does not hold the current ledger key"):
            seal_now(ctx)


class TestPersonalData:
    def test_personal_values_enter_the_ledger_only_as_salted_hashes(self, ctx):
        start(ctx, 1, requested_for="aad-user-42", requested_for_email="ana@example.org")
        start(ctx, 2, requested_for="aad-user-42")
        seal_now(ctx)
        starts = [e for e in entries(ctx) if e.action == "run.start"]
        for row in starts:
            assert b"aad-user-42" not in row.entry
            assert b"ana@example.org" not in row.entry
        first, second = (parse_entry(row.entry).body["data"] for row in starts)
        assert first["requested_for"] == second["requested_for"]  # one person, one hash
        assert first["requested_for_email"].startswith("salted-sha256:")
        assert second["requested_for_email"] is None
        with ctx.read() as session:
            openings = {o.value: o for o in session.scalars(select(PersonalDataOpening))}
        opening = openings["aad-user-42"]
        assert commitment_of(bytes.fromhex(opening.salt), "aad-user-42") == first["requested_for"]
        assert opening.commitment == first["requested_for"]
