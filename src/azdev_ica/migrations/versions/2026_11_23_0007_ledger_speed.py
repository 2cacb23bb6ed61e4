"""Ledger storage tuned for sealing throughput.

Revision ID: 0007_ledger_speed
Revises: 0006_identity_web
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "0007_ledger_speed"
down_revision = "0006_identity_web"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
