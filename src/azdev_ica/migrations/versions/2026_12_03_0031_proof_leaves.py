"""Ledger: an inclusion proof reads its leaf hashes from the primary key's index (issue 21).

On PostgreSQL the primary key of azdev_audit_entry carries each entry's leaf hash (INCLUDE), so
the leaf hashes under a proof's lower nodes (at most 64 adjacent entries) are read from one or
two index pages (an index-only scan) instead of the four to seven heap pages their entries fill:
at 10 million entries, when the pages are not cached, that read is most of a proof's time.
SQLite is unchanged (no INCLUDE; a proof there reads the same rows as before). The index is
rebuilt here: about half a minute per 10 million entries, the table locked meanwhile.

Revision ID: 0031_proof_leaves
Revises: 0030_cleanup
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0031_proof_leaves"
down_revision = "0030_cleanup"
branch_labels = None
depends_on = None


def _primary_key(include: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE azdev_audit_entry DROP CONSTRAINT pk_azdev_audit_entry, "
        f"ADD CONSTRAINT pk_azdev_audit_entry PRIMARY KEY (year, idx){include}"
    )


def upgrade() -> None:
    _primary_key(" INCLUDE (leaf)")


def downgrade() -> None:
    _primary_key("")
