"""The outside checkpoint store takes the witnesses' cosignatures onto a stored checkpoint,
and still refuses another checkpoint for a stored size."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from azdev_ica.adapters.checkpoint_store import CheckpointStoreError, FolderCheckpointStore
from azdev_ica.ledger.cosignature import Cosigner, append_cosignatures
from azdev_ica.ledger.merkle import MemoryTree
from azdev_ica.ledger.note import Checkpoint, Signer, sign_checkpoint

ORIGIN = "ica.test/audit/2026"
AT = datetime(2026, 5, 1, tzinfo=UTC)


def test_cosignatures_are_added_and_a_fork_is_still_refused(tmp_path: Path) -> None:
    store = FolderCheckpointStore(tmp_path)
    tree = MemoryTree()
    for i in range(5):
        tree.append(b"entry %d" % i)
    signer = Signer.generate("ica.test/audit")
    checkpoint = Checkpoint(ORIGIN, 5, tree.root())
    note = sign_checkpoint(checkpoint, [signer])
    assert store.put(ORIGIN, 5, note, AT)
    first = Cosigner.generate("w1.test/w").cosign(checkpoint.body(), 1_700_000_000)
    second = Cosigner.generate("w2.test/w").cosign(checkpoint.body(), 1_700_000_001)
    one = append_cosignatures(note, [first])
    assert store.put(ORIGIN, 5, one, AT)
    both = append_cosignatures(one, [second, first])
    assert both.count("\n— ") == 3
    assert store.put(ORIGIN, 5, both, AT)
    stored = store.get(ORIGIN, 5)
    assert stored is not None
    assert stored.note == both
    assert stored.signed_at == AT
    # Fewer signatures than stored (the database's plain note again): already there.
    assert not store.put(ORIGIN, 5, note, AT)
    assert not store.put(ORIGIN, 5, one, AT)
    assert store.get(ORIGIN, 5).note == both  # type: ignore[union-attr]
    # Another root for the same size, even carrying the stored signature lines: refused.
    tree.append(b"more")
    other = sign_checkpoint(Checkpoint(ORIGIN, 5, tree.root()), [signer])
    with pytest.raises(CheckpointStoreError, match="different checkpoint"):
        store.put(ORIGIN, 5, other, AT)
    # The same text with a signature line swapped for another: refused too.
    swapped = note + Cosigner.generate("w3.test/w").cosign(checkpoint.body(), 1_700_000_002)
    replaced = swapped.replace(note.rpartition("\n\n")[2], "")
    with pytest.raises(CheckpointStoreError):
        store.put(ORIGIN, 5, replaced, AT)
