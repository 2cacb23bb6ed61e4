"""Ledger trust: witnesses, their cosignatures, sealer stall state.

Revision ID: 0016_ledger_trust
Revises: 0015_scope
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0016_ledger_trust"
down_revision = "0015_scope"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
