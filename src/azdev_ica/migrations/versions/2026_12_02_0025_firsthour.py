"""First hour: tenants' added-at for drill schedules, notification delivery without a route.

Revision ID: 0025_firsthour
Revises: 0024_console2
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0025_firsthour"
down_revision = "0024_console2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
