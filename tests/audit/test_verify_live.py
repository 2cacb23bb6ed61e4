"""`ica audit verify` while a sealer keeps the ledger growing: a checkpoint the sealer commits
and publishes during the verification is not a finding. The sealer publishes only after its
commit, so the verifier lists the outside store before it reads the database; the other way
round, a checkpoint published in between read as "removed, or the database was rewound"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from azdev_ica.adapters.checkpoint_store import FolderCheckpointStore, StoredCheckpoint
from azdev_ica.audit.verify import verify_ledger
from azdev_ica.jobs.sealer import SealResult, checkpoint_store, seal_now
from tests.audit.ledgerdb import activity, start


class SealedWhileListed(FolderCheckpointStore):
    """The outside store, where a live sealer commits and publishes one more checkpoint at the
    moment the verifier lists it."""

    def __init__(self, root: Path, ctx: Any) -> None:
        super().__init__(root)
        self.ctx = ctx
        self.sealed: list[SealResult] = []

    def all(self, origin: str) -> list[StoredCheckpoint]:
        if not self.sealed:
            start(self.ctx, 9000)
            self.sealed.append(seal_now(self.ctx))
        return super().all(origin)


def checkpoint_sizes(ctx: Any) -> list[int]:
    with ctx.db.engine.connect() as conn:
        return list(conn.scalars(text("SELECT size FROM azdev_audit_checkpoint ORDER BY size")))


def test_a_checkpoint_published_during_verification_is_not_a_finding(ctx):
    activity(ctx, 2, seal_every=1)
    before = checkpoint_sizes(ctx)
    outside = checkpoint_store(ctx.ledger)
    assert outside is not None
    store = SealedWhileListed(outside.root, ctx)

    report = verify_ledger(ctx.db, store)

    assert [len(s.checkpoints) for s in store.sealed] == [1]  # published during the run
    after = checkpoint_sizes(ctx)
    assert after[:-1] == before
    assert after[-1] > before[-1]
    assert report.ok, report.text()
    shard = report.shards[0]
    # The new checkpoint was checked on both sides, not skipped.
    assert (shard.published, shard.published_verified) == (len(after), len(after))
    assert (shard.checkpoints, shard.checkpoints_verified) == (len(after), len(after))
    assert shard.tree_size == after[-1]
