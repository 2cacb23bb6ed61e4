"""Governed policy changes: proposals signed by two approvers.

Revision ID: 0012_policy_governance
Revises: 0011_promotion
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "0012_policy_governance"
down_revision = "0011_promotion"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
