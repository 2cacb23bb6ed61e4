"""Web console: enrolment links, step-up, what the console needs to store.

Revision ID: 0018_console
Revises: 0017_hardening
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0018_console"
down_revision = "0017_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
