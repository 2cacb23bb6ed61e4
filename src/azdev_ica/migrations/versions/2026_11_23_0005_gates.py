"""Gates, deployment locks and emergency overrides.

Revision ID: 0005_gates
Revises: 0004_approvals
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "0005_gates"
down_revision = "0004_approvals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
