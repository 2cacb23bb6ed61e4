"""Pipelines' leftovers: every requester, failed verifications in the change failure rate.

Revision ID: 0030_cleanup
Revises: 0029_ledger
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0030_cleanup"
down_revision = "0029_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
