"""Ledger: inclusion proofs and audit windows at ten million entries (issue 21).

Revision ID: 0029_ledger
Revises: 0028_gate
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0029_ledger"
down_revision = "0028_gate"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
