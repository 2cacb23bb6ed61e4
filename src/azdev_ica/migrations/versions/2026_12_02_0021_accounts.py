"""Accounts: enrolment links, credentials set only by their person, step-up.

Revision ID: 0021_accounts
Revises: 0020_witness
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0021_accounts"
down_revision = "0020_witness"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
