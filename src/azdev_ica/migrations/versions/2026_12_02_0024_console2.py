"""Console, part two: policy proposals from the console, enrolment API.

Revision ID: 0024_console2
Revises: 0023_observe
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0024_console2"
down_revision = "0023_observe"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
