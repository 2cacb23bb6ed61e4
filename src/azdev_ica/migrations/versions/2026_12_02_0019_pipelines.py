"""Pipelines: requesters of every attempt, the rules the kit leaves idle.

Revision ID: 0019_pipelines
Revises: 0018_console
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0019_pipelines"
down_revision = "0018_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
