"""Hardening: sign-in throttling per client address and login, callback token lifetimes.

Revision ID: 0017_hardening
Revises: 0016_ledger_trust
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0017_hardening"
down_revision = "0016_ledger_trust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
