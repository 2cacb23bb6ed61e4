"""Observe: SIEM forwarding cursors per destination, kept monthly compliance reports.

Revision ID: 0023_observe
Revises: 0022_pipelines2
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0023_observe"
down_revision = "0022_pipelines2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
