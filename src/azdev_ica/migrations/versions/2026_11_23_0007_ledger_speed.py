"""Ledger storage tuned for sealing throughput: each entry row carries its leaf hash, and the
sealer stores only the tree nodes of level 6 and above (one row per 32 entries instead of two
per entry); lower nodes are folded from at most 64 leaf hashes when a proof needs them.

Entries sealed before this revision keep a NULL leaf: their leaves and lower nodes stay in
`azdev_audit_node`, where readers and `ica audit verify` still find them.

Revision ID: 0007_ledger_speed
Revises: 0006_identity_web
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_ledger_speed"
down_revision = "0006_identity_web"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: no table rewrite, no UPDATE of the append-only rows.
    op.add_column("azdev_audit_entry", sa.Column("leaf", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    raise RuntimeError(
        "the audit ledger cannot be downgraded: entries sealed since this revision keep their "
        "leaf hashes only in azdev_audit_entry.leaf. Restore a backup taken before the upgrade."
    )
