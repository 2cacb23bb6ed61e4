"""The gate at the database's speed (issue 21).

Revision ID: 0028_gate
Revises: 0027_build
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0028_gate"
down_revision = "0027_build"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
